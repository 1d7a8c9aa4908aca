"""The ``mesh-decoder`` command: one-line errors, non-zero exits, no tracebacks."""

import subprocess
import sys

import pytest

from mesh_decoder import __version__
from mesh_decoder.cli import main


def test_version(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert __version__ in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["no-such-command"],
        ["template", "--vertices", "many", "-o", "x.obj"],
        ["template", "--kind", "cube", "-o", "x.obj"],
    ],
)
def test_argument_errors_are_one_line(argv, capsys):
    code = main(argv)
    err = capsys.readouterr().err
    assert code != 0
    assert err.startswith("error: ")
    assert err.count("\n") == 1, err
    assert "Traceback" not in err


def test_console_script_has_no_traceback(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "mesh_decoder.cli", "hierarchy", str(tmp_path / "missing.obj")],
        capture_output=True,
        text=True,
    )
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    assert "missing.obj" in proc.stderr
    assert proc.stderr.count("\n") == 1
