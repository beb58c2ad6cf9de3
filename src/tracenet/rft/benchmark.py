"""`python -m tracenet.rft.benchmark`: MACs ratio and CPU wall-clock ratio of plan.run vs the
full forward for torchvision resnet50 `layer3` (random weights) and a small interior box,
timed side by side (alternating) in one run, at each requested torch thread count (default:
1 and torch's default). Prints; never asserts."""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torchvision
from torchvision.models.feature_extraction import create_feature_extractor

from tracenet.rft import trace


def _time(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--height", type=int, default=800)
    parser.add_argument("--width", type=int, default=1344)
    parser.add_argument(
        "--box", type=int, nargs=4, metavar=("Y0", "Y1", "X0", "X1"), help="default: 2x2 at the centre"
    )
    parser.add_argument("--repeats", type=int, default=7, help="timed pairs (median; at least 5)")
    parser.add_argument(
        "--threads", type=int, nargs="+", help="torch thread counts to time (default: 1 and torch's default)"
    )
    args = parser.parse_args(argv)
    if args.repeats < 5:
        parser.error("--repeats must be at least 5")
    threads = args.threads or sorted({1, torch.get_num_threads()})
    model = create_feature_extractor(torchvision.models.resnet50(), {"layer3": "layer3"}).eval()
    shape = (1, 3, args.height, args.width)
    x = torch.randn(shape)
    t0 = time.perf_counter()
    trace(model, shape, {"layer3": (0, 1, 0, 1)})  # graph capture, once per model and shape
    capture_s = time.perf_counter() - t0
    with torch.inference_mode():
        h, w = model(x)["layer3"].shape[-2:]
        box = tuple(args.box) if args.box else (h // 2 - 1, h // 2 + 1, w // 2 - 1, w // 2 + 1)
        t0 = time.perf_counter()
        plan = trace(model, shape, {"layer3": box})
        plan_ms = (time.perf_counter() - t0) * 1e3
        macs_ratio = plan.macs / plan.full_macs
        print(f"resnet50 layer3 at {args.height}x{args.width}, box {box} of {h}x{w}")
        print(f"capture {capture_s:.2f} s, plan {plan_ms:.1f} ms, input region {plan.input_region}")
        print(
            f"MACs: plan {plan.macs / 1e9:.2f} G, full {plan.full_macs / 1e9:.2f} G, ratio {macs_ratio:.3f}"
        )
        default = torch.get_num_threads()
        try:
            for n in threads:
                torch.set_num_threads(n)
                plan.run(x)  # warm-up
                full_t, plan_t = [], []
                for _ in range(args.repeats):
                    full_t.append(_time(lambda: model(x)))
                    plan_t.append(_time(lambda: plan.run(x)))
                full_s, plan_s = statistics.median(full_t), statistics.median(plan_t)
                ratio = plan_s / full_s
                print(
                    f"threads {n}: wall (median of {args.repeats}) plan {plan_s * 1e3:.1f} ms, full {full_s * 1e3:.1f} ms, "
                    f"ratio {ratio:.3f}; wall ratio / MACs ratio = {ratio / macs_ratio:.2f} (target <= 1.3)"
                )
        finally:
            torch.set_num_threads(default)


if __name__ == "__main__":
    main()
