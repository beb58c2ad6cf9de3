"""`tracenet serve` on the command line: what it says before serving, and its one-line errors."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tracenet.cli import main


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[dict]:
    """Runs `tracenet serve` up to uvicorn.run, recording its arguments instead of serving."""
    import torch
    import uvicorn

    calls: dict = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: calls.update(kw, app=app))
    monkeypatch.chdir(tmp_path)  # no outputs/train/model.pt here
    threads = torch.get_num_threads()
    yield calls
    torch.set_num_threads(threads)  # serve sets them for the whole process


def test_without_checkpoint_it_warns_and_listens_on_loopback(served: dict, capsys) -> None:
    assert main(["serve", "--port", "8123"]) == 0
    err = capsys.readouterr().err
    assert "WARNING" in err and "randomly initialised resnet18" in err
    assert "http://127.0.0.1:8123/" in err
    assert served["host"] == "127.0.0.1" and served["port"] == 8123


@pytest.mark.parametrize(("cores", "expected"), [(2, 1), (1, 1), (8, None)])
def test_torch_threads_default_to_one_on_a_small_machine(
    served: dict, capsys, monkeypatch: pytest.MonkeyPatch, cores: int, expected: int | None
) -> None:
    import os

    import torch

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cores)), raising=False)
    before = torch.get_num_threads()
    assert main(["serve"]) == 0
    threads = torch.get_num_threads()
    assert threads == (expected or before)
    assert f"torch threads {threads}" in capsys.readouterr().err
    assert main(["serve", "--threads", "2"]) == 0  # asked for: always honoured
    assert torch.get_num_threads() == 2


def test_other_addresses_are_served_with_a_warning(served: dict, capsys) -> None:
    assert main(["serve", "--host", "0.0.0.0"]) == 0
    assert "anyone who can reach this machine" in capsys.readouterr().err
    assert served["host"] == "0.0.0.0"


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--checkpoint", "missing.pt"], "checkpoint missing.pt not found"),
        (["--port", "0"], "port must be in 1..65535"),
        (["--threads", "0"], "threads must be at least 1"),
        (["--max-upload-mib", "0"], "max_bytes must be positive"),
        (["--max-sessions", "0"], "max_sessions must be at least 1"),
    ],
)
def test_bad_options_give_one_clear_line(served: dict, capsys, args: list[str], words: str) -> None:
    assert main(["serve", *args]) == 2
    err = capsys.readouterr().err
    assert words in err and "Traceback" not in err
    assert not served
