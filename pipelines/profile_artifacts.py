"""DVC stage `profile`: cold start, warm latency, RSS, size and MACs of every exported artifact."""

from tracenet.config import load_params
from tracenet.export.stage import run_profile

if __name__ == "__main__":
    js, md = run_profile(load_params().export)
    print(md.read_text(), end="")
    print(f"wrote {js} and {md}")
