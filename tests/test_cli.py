"""The ``mesh-decoder`` command: one-line errors, non-zero exits, no tracebacks."""

import subprocess
import sys

import numpy as np
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


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


def test_output_paths_are_checked_before_any_work(tmp_path, capsys):
    a_file = tmp_path / f"file{np.random.default_rng().integers(1000)}"
    a_file.write_text("keep me")
    a_dir = tmp_path / "adir"
    a_dir.mkdir()
    cases = [
        (["template", "--vertices", "600", "-o", str(a_file / "x.obj")], f"{a_file} is a file"),
        (["template", "--vertices", "600", "-o", str(a_dir)], "found a directory"),
        (["hierarchy", "-o", str(a_file / "h.npz")], f"{a_file} is a file"),
        (["render", str(tmp_path / "no-run"), "-o", str(a_dir)], "found a directory"),
        (["train", str(tmp_path / "no-config.yaml"), "-o", str(a_file)],
         "expected a directory, found an existing file"),
        (["bench", "--decoders", "pca", "--batch-sizes", "1", "--modes", "eager", "--vertices", "600",
          "--output-dir", str(a_file / "sub")], f"{a_file} is a file"),
        (["evaluate", str(tmp_path / "no-run"), "--json", str(a_file / "x.json")], f"{a_file} is a file"),
    ]
    for argv, expected in cases:
        assert main(argv) == 1, argv
        err = _one_error_line(capsys)
        assert expected in err, (argv, err)
    assert a_file.read_text() == "keep me" and list(a_dir.iterdir()) == []


def test_os_errors_are_one_line_naming_the_users_file(tmp_path, capsys, monkeypatch):
    import mesh_decoder.cli as cli

    monkeypatch.setattr(cli, "check_output_path", lambda path, name, **kw: path)  # reach the write itself
    a_file = tmp_path / "afile"
    a_file.write_text("")
    assert main(["template", "--vertices", "600", "-o", str(a_file / "x.obj")]) == 1
    err = _one_error_line(capsys)
    assert str(a_file) in err and "expected a directory, found a file" in err
    target = tmp_path / f"out{np.random.default_rng().integers(1000)}.obj"
    target.mkdir()
    assert main(["template", "--vertices", "600", "-o", str(target)]) == 1
    err = _one_error_line(capsys)
    assert err == f"error: {target}: Is a directory\n", err  # the user's path, not the hidden temporary file
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_one_line_prefers_the_rename_destination():
    from mesh_decoder._checks import one_line_error as _one_line

    exc = IsADirectoryError(21, "Is a directory", "/d/.out.png.x1y2.tmp", None, "/d/out.png")
    assert _one_line(exc) == "/d/out.png: Is a directory"
    assert _one_line(OSError(28, "No space left on device")) == "[Errno 28] No space left on device"


def test_hierarchy_takes_real_factors(tmp_path, capsys):
    """--factors takes what build_hierarchy takes: real numbers > 1 (a whole number stays an int in meta)."""
    from mesh_decoder.hierarchy.storage import load_hierarchy

    template = tmp_path / "t.obj"
    assert main(["template", "--vertices", "600", "-o", str(template)]) == 0
    out = tmp_path / "h.npz"
    assert main(["hierarchy", str(template), "--factors", "2.5", "4", "--texture-size", "0", "-o", str(out)]) == 0
    h = load_hierarchy(out)
    assert h.meta["factors"] == [2.5, 4] and h.sizes == [600, 240, 60]
    capsys.readouterr()
    for bad in ("1", "nan"):
        assert main(["hierarchy", str(template), "--factors", bad, "--texture-size", "0"]) != 0
        assert "factors[0]: expected a finite down-sampling factor > 1" in _one_error_line(capsys)
