import subprocess
import sys

import tracenet
from tracenet.cli import SUBCOMMANDS, main


def test_version_is_the_installed_one():
    from importlib.metadata import version

    assert tracenet.__version__ == version("tracenet")


def test_help_lists_every_subcommand(capsys):
    assert main([]) == 0
    out = capsys.readouterr().out
    for name in SUBCOMMANDS:
        assert name in out


def test_python_dash_m_matches_console_script():
    via_module = subprocess.run(
        [sys.executable, "-m", "tracenet", "--help"], capture_output=True, text=True, check=True
    )
    assert "usage: tracenet" in via_module.stdout
    assert all(name in via_module.stdout for name in SUBCOMMANDS)


def test_unknown_subcommand_is_a_clear_error(capsys):
    import pytest

    with pytest.raises(SystemExit) as exc:
        main(["no-such-command"])
    assert exc.value.code == 2
    assert "invalid choice" in capsys.readouterr().err
