"""mesh_decoder._atomic: atomic_write refuses bad target paths up front, naming the path; write_json writes
standard JSON."""

import json
import math
import os

import numpy as np
import pytest
import torch

from mesh_decoder._atomic import atomic_write, write_json
from mesh_decoder.errors import MeshError, OutputPathError


def _payload() -> bytes:
    return np.random.default_rng(7).integers(0, 256, 64, dtype=np.uint8).tobytes()


def test_a_directory_is_refused_naming_it(tmp_path):
    target = tmp_path / "out.obj"
    target.mkdir()
    with pytest.raises(OutputPathError) as info:
        with atomic_write(target) as handle:
            handle.write(_payload())
    assert isinstance(info.value, MeshError) and isinstance(info.value, OSError)  # ValueError, and OSError callers
    assert str(info.value) == f"{target}: expected a file path, found a directory"
    assert sorted(os.listdir(tmp_path)) == ["out.obj"] and os.listdir(target) == []  # no temporary file left


def test_a_symlink_to_a_directory_is_refused(tmp_path):
    (tmp_path / "d").mkdir()
    os.symlink(tmp_path / "d", tmp_path / "link")
    with pytest.raises(OutputPathError, match="found a directory"):
        with atomic_write(tmp_path / "link") as handle:
            handle.write(_payload())


@pytest.mark.parametrize("depth", [1, 3])
def test_a_file_among_the_parents_is_refused_naming_it(tmp_path, depth):
    a_file = tmp_path / "afile"
    a_file.write_bytes(_payload())
    target = a_file.joinpath(*["sub"] * (depth - 1), "x.npz")
    with pytest.raises(OutputPathError) as info:
        with atomic_write(target) as handle:
            handle.write(_payload())
    assert isinstance(info.value, ValueError)
    assert str(info.value) == f"{target}: expected a file path, but {a_file} is a file, not a directory"
    assert info.value.filename == str(target)
    assert a_file.read_bytes() == _payload() and sorted(os.listdir(tmp_path)) == ["afile"]


def test_new_parents_are_created_and_the_file_written(tmp_path):
    target = tmp_path / "a" / "b" / "x.bin"
    with atomic_write(target) as handle:
        handle.write(_payload())
    assert target.read_bytes() == _payload()


def _strict_loads(text: str):
    def refuse(token):
        raise AssertionError(f"non-standard JSON token {token}")

    return json.loads(text, parse_constant=refuse)


def test_write_json_writes_standard_json(tmp_path):
    """NaN and infinities are not JSON: they become null and "inf"/"-inf"; dtypes and devices become strings."""
    values = np.random.default_rng(3).normal(size=4).tolist()
    payload = {"losses": [values[0], math.nan, values[1]], "nested": {"up": math.inf, "down": -math.inf},
               "pair": (values[2], values[3]), "dtype": torch.float16, "device": torch.device("cpu"), 2: "key"}
    path = tmp_path / "out.json"
    write_json(path, payload, indent=1)
    data = _strict_loads(path.read_text())
    assert data == {"losses": [values[0], None, values[1]], "nested": {"up": "inf", "down": "-inf"},
                    "pair": [values[2], values[3]], "dtype": "torch.float16", "device": "cpu", "2": "key"}
    assert path.read_text().startswith('{\n "losses"')  # the indent is the caller's


def test_write_json_writes_keys_as_json_does(tmp_path):
    """Keys went through str(): None became "None" and True "True", where JSON (and json.dumps) write
    "null" and "true"; keys JSON cannot take (a dtype) are still written as str()."""
    value = float(np.random.default_rng(5).normal())
    payload = {None: value, True: 1, 2.5: "x", 3: "y", torch.float32: "z"}
    write_json(tmp_path / "keys.json", payload)
    assert _strict_loads((tmp_path / "keys.json").read_text()) == {
        "null": value, "true": 1, "2.5": "x", "3": "y", "torch.float32": "z"}


def test_write_json_keeps_the_old_file_on_bad_payload(tmp_path):
    path = tmp_path / "out.json"
    path.write_text('{"kept": 1}\n')
    with pytest.raises(TypeError):
        write_json(path, {"set": {1, 2}})
    assert path.read_text() == '{"kept": 1}\n' and os.listdir(tmp_path) == ["out.json"]


class _FullDisk:
    """A file handle whose writes fail as a full disk does."""

    def __init__(self, handle):
        self.handle = handle

    def write(self, data):
        raise OSError(28, "No space left on device")

    def __getattr__(self, name):
        return getattr(self.handle, name)


def test_a_failed_write_names_the_target_not_the_temporary_file(tmp_path):
    """A full disk read '[Errno 28] No space left on device', naming no file."""
    target = tmp_path / "face.obj"
    target.write_bytes(b"earlier")
    with pytest.raises(OSError) as info:
        with atomic_write(target) as handle:
            _FullDisk(handle).write(_payload())
    assert info.value.errno == 28 and info.value.filename == str(target), info.value
    assert os.listdir(tmp_path) == ["face.obj"] and target.read_bytes() == b"earlier"


def test_a_folder_refusing_new_files_names_the_target(tmp_path, monkeypatch):
    """A read-only folder named the temporary file ('.face.png.1yz8yzg5.tmp')."""
    import tempfile

    def refuse(prefix, suffix, dir):
        raise PermissionError(1, "Operation not permitted", os.path.join(dir, f"{prefix}x7y8{suffix}"))

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    with pytest.raises(PermissionError) as info:
        with atomic_write(tmp_path / "face.png") as handle:
            handle.write(_payload())
    assert info.value.filename == str(tmp_path / "face.png"), info.value


def test_an_error_about_another_file_keeps_its_name(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        with atomic_write(tmp_path / "out.json") as handle:
            handle.write(open(tmp_path / "missing.txt", "rb").read())
    assert info.value.filename == str(tmp_path / "missing.txt")
    assert os.listdir(tmp_path) == []


def test_an_error_without_an_errno_keeps_its_message(tmp_path):
    with pytest.raises(OSError, match="^disk full$"):
        with atomic_write(tmp_path / "out.bin") as handle:
            handle.write(_payload())
            raise OSError("disk full")
    assert os.listdir(tmp_path) == []


def test_a_fifo_or_device_at_the_path_is_never_replaced(tmp_path):
    """Writing to /dev/null (or a FIFO) renamed the temporary file over it: as root, /dev/null became a file."""
    import os

    from mesh_decoder._atomic import atomic_write
    from mesh_decoder._checks import check_output_path
    from mesh_decoder.errors import OutputPathError

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(OutputPathError, match=r"expected a regular file path, found a named pipe \(FIFO\)"):
        with atomic_write(fifo) as handle:
            handle.write(b"x")
    assert fifo.is_fifo() and [p.name for p in tmp_path.iterdir()] == ["pipe"]
    with pytest.raises(ValueError, match=r"-o pipe .*: expected a regular file path, found a named pipe"):
        check_output_path(fifo, "-o pipe")
    with pytest.raises(ValueError, match=r"expected a regular file path, found a character device"):
        check_output_path("/dev/null", "-o")


def test_text_is_written_as_utf8_with_its_own_line_ends_whatever_the_locale(tmp_path):
    """A text write took the locale's encoding and the platform's line ends: under LC_ALL=C without UTF-8 mode
    'UnicodeEncodeError: ascii codec' for a README arrow (and cp1252 with CRLF on Windows)."""
    import subprocess
    import sys

    target = tmp_path / "out.txt"
    code = ("from mesh_decoder._atomic import atomic_write\n"
            f"with atomic_write({str(target)!r}, 'w') as h:\n"
            "    h.write('a \\u2192 b\\nc\\r\\n')\n")
    env = {**os.environ, "LC_ALL": "C", "LANG": "C", "PYTHONUTF8": "0", "PYTHONCOERCECLOCALE": "0"}
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert target.read_bytes() == "a \u2192 b\nc\r\n".encode("utf-8")
