"""`tracenet export`, `tracenet profile` and `tracenet bench`: help, clear errors, and real runs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tracenet.cli import main


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    import torch

    from tracenet import TraceNet

    torch.manual_seed(0)
    model = TraceNet.build(backbone="resnet18", fpn_channels=16, mask_branch_channels=16).eval()
    return model.save_checkpoint(tmp_path_factory.mktemp("ckpt") / "model.pt")


def _error(capsys, argv: list[str]) -> str:
    """Run argv, expect the one-line user error (exit code 2, no traceback), return it."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"tracenet {argv[0]}: error: ") and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err
    return err


def test_help_does_not_import_torch_or_hydra():
    code = "import sys; from tracenet.cli import build_parser; build_parser(); print(sorted({'torch', 'hydra'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        ("export", ["--backbone", "--input-size", "--formats", "--out", "KEY=VALUE", "export.input_size"]),
        ("profile", ["--artifacts", "--threads", "--runs", "--warmup", "export.profile.out_dir"]),
        ("bench", ["model", "rft", "serve", "python -m tracenet.models.benchmark"]),
    ],
)
def test_help_texts(capsys, command, expected):
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: tracenet {command}")
    for text in expected:
        assert text in out


@pytest.mark.parametrize(("target", "option"), [("model", "--backbones"), ("serve", "--reps")])
def test_bench_target_help_is_the_benchmarks_own(capsys, target, option):
    argv0 = sys.argv[0]
    with pytest.raises(SystemExit) as exc:
        main(["bench", target, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: tracenet bench {target}") and option in out
    assert sys.argv[0] == argv0


def test_export_without_trained_model_says_which_command_creates_it(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    err = _error(capsys, ["export"])
    assert "outputs/train/model.pt" in err and "dvc repro train" in err and "make demo" in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--backbone", "resnet5"], "unknown backbone resnet5; choose from resnet18"),
        (["--backbone", "resnet18", "--input-size", "100"], "multiple of 128"),
        (["--backbone", "resnet18", "--formats", "onnx,foo"], "unsupported export formats ['foo']"),
        (["--backbone", "resnet18", "--checkpoint", "model.pt"], "not both"),
        (["--checkpoint", "nowhere.pt"], "checkpoint nowhere.pt does not exist"),
        (["export.nosuch=1"], "Could not override 'export.nosuch'"),
    ],
)
def test_export_bad_input_is_one_clear_line(tmp_path, capsys, args, message):
    err = _error(capsys, ["export", *args, "--out", str(tmp_path / "out")])
    assert message in err
    assert not (tmp_path / "out").exists()


def test_bad_flag_values_are_argparse_errors(capsys):
    for argv in (
        ["export", "--input-size", "big"],
        ["profile", "--threads", "1,0"],
        ["profile", "--runs", "0"],
    ):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 2
        assert "expected an integer" in capsys.readouterr().err


def test_profile_without_artifacts_says_how_to_make_them(tmp_path, capsys):
    err = _error(capsys, ["profile", "--artifacts", str(tmp_path / "none")])
    assert "no .onnx/.tflite artifacts" in err and "tracenet export" in err


def test_bench_model_without_data_is_one_clear_line(tmp_path, capsys):
    err = _error(capsys, ["bench", "model", "--data", str(tmp_path), "--backbones", "resnet18"])
    assert "instances_val2017.json not found" in err


def test_bench_rft_runs_the_benchmark(capsys):
    args = ["--height", "64", "--width", "64", "--repeats", "5", "--threads", "1"]
    assert main(["bench", "rft", *args]) == 0
    out = capsys.readouterr().out
    assert "resnet50 layer3 at 64x64" in out and "MACs: plan" in out and "threads 1:" in out


@pytest.mark.slow
def test_export_then_profile_a_tiny_model(checkpoint, tmp_path, capsys):
    pytest.importorskip("onnxruntime", reason="part of the export extra: pip install -e '.[export]'")
    exported, profiled = tmp_path / "export", tmp_path / "profile"
    args = [
        "--checkpoint",
        str(checkpoint),
        "--input-size",
        "128",
        "--formats",
        "onnx",
        "--out",
        str(exported),
    ]
    assert main(["export", *args, f"export.verify.data={tmp_path / 'absent'}"]) == 0
    names = sorted(p.name for p in exported.iterdir())
    assert names == [
        "resnet18_full_128.onnx",
        "resnet18_full_128.onnx.json",
        "resnet18_trace_128.onnx",
        "resnet18_trace_128.onnx.json",
        "verify.json",
    ]  # no temporary files left beside them
    assert json.loads((exported / "resnet18_trace_128.onnx.json").read_text())["input_size"] == [128, 128]
    assert "verify.json in" in capsys.readouterr().out

    args = [
        "--artifacts",
        str(exported),
        "--out",
        str(profiled),
        "--threads",
        "1",
        "--runs",
        "2",
        "--warmup",
        "0",
    ]
    assert main(["profile", *args]) == 0
    rows = json.loads((profiled / "profile.json").read_text())["rows"]
    assert sorted((r["mode"], r["threads"], r["runs"]) for r in rows) == [("full", 1, 2), ("trace", 1, 2)]
    assert "latency ratio" in (profiled / "profile.md").read_text()
    assert "latency ratio" in capsys.readouterr().out
