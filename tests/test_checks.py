"""Tests of mesh_decoder._checks: each error names the argument, the expected and the found value."""

from __future__ import annotations

import argparse
import os
import re

import numpy as np
import pytest
import torch

from mesh_decoder import _checks
from mesh_decoder._checks import (
    MAX_SEED,
    as_faces,
    check_bool,
    check_device,
    check_int,
    check_output_path,
    check_tensor,
    int_argument,
    one_line_error,
    out_of_memory,
    real_argument,
    real_number,
    same_device,
)

DEVICES = ["cpu"] + ([pytest.param("cuda", marks=pytest.mark.cuda)] if torch.cuda.is_available() else [])


def rand(*shape: int, seed: int = 0, dtype=torch.float32, device="cpu") -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=dtype).to(device)


# ---------------------------------------------------------------------------- check_tensor
@pytest.mark.parametrize("device", DEVICES)
def test_check_tensor_returns_a_matching_tensor_itself(device):
    x = rand(4, 5, 3, seed=1, device=device)
    dev = torch.device(device) if device == "cpu" else x.device  # a tensor's CUDA device has an index
    out = check_tensor(x, "x", shape=("B", 5, None), dtype=(torch.float64, torch.float32), device=dev)
    assert out is x
    assert check_tensor(x, "x") is x  # nothing asked, nothing checked


@pytest.mark.parametrize("bad", [[1.0, 2.0], np.ones((2, 3)), None, 3.0])
def test_check_tensor_refuses_a_non_tensor_naming_its_type(bad):
    with pytest.raises(TypeError, match=rf"^points: expected a torch.Tensor, got {type(bad).__name__}$"):
        check_tensor(bad, "points")


@pytest.mark.parametrize("shape, want", [
    ((2, 5, 3), "(2, 5, 3)"),          # a fixed size differs
    (("B", 5), "(B, 5)"),              # rank differs
    (("B", "V", 3, "C"), "(B, V, 3, C)"),
    ((4, None, 2), "(4, None, 2)"),
])
def test_check_tensor_names_the_expected_and_the_found_shape(shape, want):
    x = rand(4, 5, 3, seed=2)
    with pytest.raises(ValueError, match=rf"^x: expected shape {re.escape(want)}, got \(4, 5, 3\)$"):
        check_tensor(x, "x", shape=shape)


def test_check_tensor_wildcards_match_any_size_but_not_any_rank():
    for n in (1, 3, 7):
        x = rand(n, 2, seed=n)
        assert check_tensor(x, "x", shape=("N", 2)) is x
        assert check_tensor(x, "x", shape=[None, 2]) is x  # any sequence of entries
    with pytest.raises(ValueError, match=r"expected shape \(N, 2\), got \(3, 2, 1\)"):
        check_tensor(rand(3, 2, 1), "x", shape=("N", 2))
    with pytest.raises(ValueError, match=r"expected shape \(\), got \(1,\)"):
        check_tensor(rand(1), "x", shape=())
    assert check_tensor(torch.tensor(2.5), "x", shape=()).item() == 2.5


def test_check_tensor_checks_numpy_integer_sizes():
    """A numpy integer size was read as 'any size' (isinstance(s, int) is False for np.int64)."""
    x = rand(2, 3, seed=3)
    with pytest.raises(ValueError, match=r"x: expected shape \(5, 3\), got \(2, 3\)"):
        check_tensor(x, "x", shape=(np.int64(5), 3))


def test_same_device_needs_the_index_only_when_one_is_named():
    """check_tensor(x, device="cuda") refused a tensor on cuda:0: torch.device("cuda") != torch.device("cuda:0")."""
    cuda0, cuda1 = torch.device("cuda", 0), torch.device("cuda", 1)
    assert same_device(cuda0, "cuda") and same_device(cuda1, torch.device("cuda"))
    assert same_device(cuda0, "cuda:0") and not same_device(cuda1, "cuda:0") and not same_device(cuda0, "cpu")
    assert same_device(torch.device("cpu"), "cpu") and not same_device(torch.device("cpu"), "cuda")


def test_check_tensor_dtype_errors_list_every_allowed_dtype():
    x = rand(3, seed=4, dtype=torch.float64)
    assert check_tensor(x, "x", dtype=torch.float64) is x
    with pytest.raises(TypeError, match=r"^w: expected dtype torch.float32, got torch.float64$"):
        check_tensor(x, "w", dtype=torch.float32)
    with pytest.raises(TypeError, match=r"^w: expected dtype torch.float16 or torch.int64, got torch.float64$"):
        check_tensor(x, "w", dtype=[torch.float16, torch.int64])


def test_check_tensor_shape_is_checked_before_dtype_and_device():
    x = rand(2, 2, seed=5, dtype=torch.float64)
    with pytest.raises(ValueError, match="expected shape"):
        check_tensor(x, "x", shape=(3, 2), dtype=torch.float32, device=torch.device("meta"))
    with pytest.raises(TypeError, match="expected dtype"):
        check_tensor(x, "x", shape=(2, 2), dtype=torch.float32, device=torch.device("meta"))


@pytest.mark.parametrize("device", DEVICES)
def test_check_tensor_names_the_expected_and_the_found_device(device):
    x = rand(3, seed=6, device=device)
    with pytest.raises(ValueError, match=rf"^x: expected a tensor on meta, got one on {x.device}$"):
        check_tensor(x, "x", device=torch.device("meta"))
    assert check_tensor(x, "x", device=x.device) is x
    assert check_tensor(rand(2, seed=7), "x", device="cpu").shape == (2,)  # a device string works too


# ------------------------------------------------------------------------------- check_int
@pytest.mark.parametrize("value", [0, 7, -3, np.int64(9), np.int32(-2), np.uint8(200), 2**40])
def test_check_int_gives_a_python_int(value):
    out = check_int(value, "n")
    assert out == int(value) and type(out) is int


@pytest.mark.parametrize("value", [True, False, np.bool_(True), 3.0, np.float32(2), "4", None, torch.tensor(3)])
def test_check_int_refuses_non_integers_naming_value_and_type(value):
    with pytest.raises(TypeError, match=rf"^count: expected an integer, got {re.escape(repr(value))} "
                                        rf"\({type(value).__name__}\)$"):
        check_int(value, "count")


def test_check_int_minimum():
    assert check_int(5, "n", minimum=5) == 5
    assert check_int(-10**6, "n") == -10**6  # no minimum, no bound
    with pytest.raises(ValueError, match=r"^n: expected an integer >= 5, got 4$"):
        check_int(4, "n", minimum=5)
    with pytest.raises(ValueError, match=r"^n: expected an integer >= 0, got -1$"):
        check_int(np.int64(-1), "n", minimum=0)


def test_check_int_maximum_names_the_whole_range_on_either_side():
    assert check_int(7, "seed", 0, 7) == 7 and check_int(-3, "k", maximum=0) == -3
    for value in (-1, 8, 2**64):
        with pytest.raises(ValueError, match=rf"^seed: expected an integer in \[0, 7\], got {value}$"):
            check_int(value, "seed", 0, 7)
    with pytest.raises(ValueError, match=r"^k: expected an integer in \[-inf, 0\], got 1$"):
        check_int(1, "k", maximum=0)


# ------------------------------------------------------------------------------ check_bool
@pytest.mark.parametrize("value, want", [(True, True), (False, False), (np.bool_(True), True),
                                         (np.bool_(False), False)])
def test_check_bool_gives_a_python_bool(value, want):
    out = check_bool(value, "flag")
    assert out is want


@pytest.mark.parametrize("value", ["no", "False", 0, 1, 1.0, None, torch.tensor(True), np.array([True])])
def test_check_bool_refuses_truthy_and_falsy_non_bools(value):
    with pytest.raises(TypeError, match=rf"^bias: expected True or False, got {re.escape(repr(value))} "
                                        rf"\({type(value).__name__}\)$"):
        check_bool(value, "bias")


# ---------------------------------------------------------------------- int_argument, seeds
def test_int_argument_parses_integers_within_the_bounds():
    parse = int_argument(1, 10)
    assert [parse(t) for t in ("1", "10", " 7 ", "+3")] == [1, 10, 7, 3]
    assert int_argument(0)("123456789012") == 123456789012  # no maximum
    assert parse.__name__ == "integer in [1, 10]" and int_argument(2).__name__ == "integer >= 2"


@pytest.mark.parametrize("minimum, maximum, text", [
    (1, 10, "0"), (1, 10, "11"), (1, 10, "-3"), (1, 10, "3.5"), (1, 10, "abc"), (1, 10, ""),
    (0, None, "-1"), (0, None, "1e3"), (2, None, "x2"),
])
def test_int_argument_refuses_naming_the_range_and_the_text(minimum, maximum, text):
    want = f"an integer >= {minimum}" if maximum is None else f"an integer in [{minimum}, {maximum}]"
    with pytest.raises(argparse.ArgumentTypeError) as info:
        int_argument(minimum, maximum)(text)
    assert str(info.value) == f"expected {want}, got {text!r}"


def test_int_argument_errors_name_the_option_through_argparse():
    parser = argparse.ArgumentParser(prog="prog", exit_on_error=False)
    parser.add_argument("--steps", type=int_argument(1, 100))
    assert parser.parse_args(["--steps", "42"]).steps == 42
    with pytest.raises(argparse.ArgumentError, match=r"^argument --steps: expected an integer in \[1, 100\], "
                                                     r"got '101'$"):
        parser.parse_args(["--steps", "101"])


@pytest.mark.parametrize("inclusive", [False, True])
def test_real_argument_takes_finite_numbers_past_the_bound(inclusive):
    rng = np.random.default_rng(17)
    lower = float(rng.integers(-5, 5))
    parse = real_argument(lower, inclusive=inclusive, what="a finite number of seconds")
    above = lower + float(rng.uniform(1e-6, 1e6))
    assert parse(repr(above)) == above
    bound = f"{'>=' if inclusive else '>'} {lower}"
    if inclusive:
        assert parse(str(lower)) == lower
    for text in [str(lower), str(lower - 0.5), "nan", "inf", "1e999", "x", ""][int(inclusive):]:
        with pytest.raises(argparse.ArgumentTypeError,
                           match=rf"^expected a finite number of seconds {re.escape(bound)}, got {re.escape(repr(text))}$"):
            parse(text)
    assert parse.__name__ == f"finite number of seconds {bound}"


def test_real_number_reads_one_real_number_of_any_kind():
    x = float(np.random.default_rng(18).normal())
    for value in (x, np.float32(x), np.float64(x), np.array(x), torch.tensor(x, dtype=torch.float64)):
        assert real_number(value) == pytest.approx(x, rel=1e-6) and type(real_number(value)) is float
    assert real_number(7) == 7.0 and real_number(np.int16(7)) == 7.0 and real_number(torch.tensor(7)) == 7.0
    for not_one in (True, np.bool_(False), torch.tensor(True), "1.5", None, [x], np.array([x]), torch.tensor([x]),
                    1j, torch.tensor(1j), np.array("1.5")):
        assert real_number(not_one) is None, not_one


def test_out_of_memory_knows_python_and_torch_allocation_failures():
    assert out_of_memory(MemoryError("Unable to allocate 74.5 GiB"))
    assert out_of_memory(RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 8 bytes"))
    assert out_of_memory(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB"))
    for other in (RuntimeError("shape mismatch"), ValueError("can't allocate memory"), OSError("disk full")):
        assert not out_of_memory(other)  # a ValueError quoting the words is no allocation failure


def test_max_seed_is_taken_by_numpy_and_torch_and_is_the_largest_numpy_takes():
    assert MAX_SEED == 2**32 - 1
    a = np.random.RandomState(MAX_SEED).standard_normal(4)
    b = np.random.RandomState(MAX_SEED).standard_normal(4)
    np.testing.assert_array_equal(a, b)
    assert torch.Generator().manual_seed(MAX_SEED).initial_seed() == MAX_SEED
    with pytest.raises(ValueError):
        np.random.RandomState(MAX_SEED + 1)
    assert int_argument(0, MAX_SEED)(str(MAX_SEED)) == MAX_SEED


# ---------------------------------------------------------------------------- check_device
@pytest.mark.parametrize("value, want", [
    ("cpu", torch.device("cpu")), ("cpu:0", torch.device("cpu", 0)), (torch.device("cpu"), torch.device("cpu")),
    ("cuda", torch.device("cuda")), ("cuda:3", torch.device("cuda", 3)), ("mps", torch.device("mps")),
])
def test_check_device_parses_without_looking_for_the_device(value, want):
    assert check_device(value, "--device", available=False) == want


@pytest.mark.parametrize("value", ["gpu", "CPU", "cpu:1", "mps:1", "meta", "xla", "cuda:-1", "", None, 0, True, 1.5])
def test_check_device_refuses_other_devices_naming_the_value(value):
    for available in (True, False):
        with pytest.raises(ValueError, match=rf"^--device: expected cpu, cuda, cuda:N or mps, "
                                             rf"got {re.escape(repr(value))}$"):
            check_device(value, "--device", available=available)


def test_check_device_cuda_must_exist(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match=rf"^--device cuda:0: CUDA is not available on this machine "
                                         rf"\(torch {re.escape(torch.__version__)}\)$"):
        check_device("cuda:0", "--device")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    for count, noun in ((1, "device"), (2, "devices")):
        monkeypatch.setattr(torch.cuda, "device_count", lambda count=count: count)
        assert check_device(f"cuda:{count - 1}", "--device") == torch.device("cuda", count - 1)
        assert check_device("cuda", "--device") == torch.device("cuda")
        with pytest.raises(ValueError, match=rf"^--device cuda:{count}: expected a CUDA device index below "
                                             rf"{count}, this machine has {count} CUDA {noun}$"):
            check_device(f"cuda:{count}", "--device")


def test_check_device_mps_must_exist(monkeypatch):
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(ValueError, match=r"^device mps: MPS is not available on this machine"):
        check_device("mps", "device")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert check_device("mps", "device") == torch.device("mps")


# ----------------------------------------------------------------------- check_output_path
def test_check_output_path_accepts_new_files_and_folders_and_creates_nothing(tmp_path):
    deep = tmp_path / "a" / "b" / "out.npz"
    assert check_output_path(deep, "--output") == str(deep)  # a PathLike comes back as a str
    folder = str(tmp_path / "dir" / "sub")
    assert check_output_path(folder, "--out-dir", directory=True) == folder
    existing = tmp_path / "old.txt"
    existing.write_text("x")
    assert check_output_path(existing, "--output") == str(existing)  # may be overwritten
    assert check_output_path(tmp_path, "--out-dir", directory=True) == str(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.txt"]


@pytest.mark.parametrize("directory, wanted", [(False, "a file path"), (True, "a directory")])
def test_check_output_path_refuses_an_empty_path(directory, wanted):
    """'' was taken as the working folder (an unset shell variable in -o "$RUN"): a run wrote its files there."""
    with pytest.raises(ValueError, match=rf"^-o: expected {wanted}, got ''$"):
        check_output_path("", "-o", directory=directory)


def test_check_output_path_names_a_folder_where_a_file_is_wanted_and_back(tmp_path):
    (tmp_path / "f.txt").write_text("x")
    with pytest.raises(ValueError, match=rf"^--output {re.escape(str(tmp_path))}: expected a file path, "
                                         rf"found a directory$"):
        check_output_path(tmp_path, "--output")
    with pytest.raises(ValueError, match=r"^--out-dir .*f\.txt: expected a directory, found an existing file$"):
        check_output_path(tmp_path / "f.txt", "--out-dir", directory=True)


def test_check_output_path_refuses_a_file_path_ending_in_a_slash(tmp_path):
    """'-o out/' passed (abspath drops the slash) and a result file named 'out' was written."""
    target = f"{tmp_path / 'out'}/"
    with pytest.raises(ValueError, match=rf"^-o {re.escape(target)}: expected a file path, got a folder path "
                                         r"\(it ends in '/'\)$"):
        check_output_path(target, "-o")
    assert check_output_path(target, "--out-dir", directory=True) == target  # a folder may end in one
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("directory", [False, True])
def test_check_output_path_names_a_file_in_the_way(tmp_path, directory):
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    target = blocker / "sub" / "out.png"
    wanted = "a directory" if directory else "a file path"
    with pytest.raises(ValueError, match=rf"^out {re.escape(str(target))}: expected {wanted}, "
                                         rf"but {re.escape(str(blocker))} is a file, not a directory$"):
        check_output_path(target, "out", directory=directory)


def test_check_output_path_names_an_unwritable_parent(tmp_path, monkeypatch):
    """(Run as root every folder is writable, so ``os.access`` is made to say no.)"""
    locked = tmp_path / "locked"
    locked.mkdir()
    monkeypatch.setattr(_checks.os, "access", lambda path, mode: os.fspath(path) != str(locked))
    with pytest.raises(ValueError, match=rf"^-o {re.escape(str(locked / 'x.obj'))}: expected a writable location, "
                                         rf"{re.escape(str(locked))} is not writable$"):
        check_output_path(locked / "x.obj", "-o")
    assert check_output_path(tmp_path / "x.obj", "-o") == str(tmp_path / "x.obj")


# -------------------------------------------------------------------------- one_line_error
def test_one_line_error_joins_the_lines_of_a_message():
    assert one_line_error(ValueError("first line\n  second\tline  ")) == "first line second line"
    assert one_line_error(KeyError()) == "KeyError"  # an empty message gives the exception's class
    assert one_line_error(RuntimeError("")) == "RuntimeError"


def test_one_line_error_names_the_users_path_for_os_errors():
    assert one_line_error(FileNotFoundError(2, "No such file or directory", "/data/in.obj")) == \
        "/data/in.obj: No such file or directory"
    assert one_line_error(PermissionError(13, "Permission denied", "/a/.tmp1", None, "/a/out.npz")) == \
        "/a/out.npz: Permission denied"
    assert one_line_error(FileExistsError(17, "File exists", "/runs/x")) == \
        "/runs/x: expected a directory, found a file (File exists)"
    assert one_line_error(OSError("disk\nfull")) == "disk full"  # no path, no errno: the message


def test_as_faces_takes_integer_tensors_and_arrays_as_int64():
    rng = np.random.default_rng(7)
    faces = rng.integers(0, 9, size=(5, 3)).astype(np.int32)
    for given in (faces, torch.from_numpy(faces), torch.from_numpy(faces).to(torch.uint8)):
        out = as_faces(given, 9, "cpu")
        assert out.dtype == torch.int64 and torch.equal(out, torch.from_numpy(faces).long())
    assert as_faces(faces[:0], 0, "cpu").shape == (0, 3)


@pytest.mark.parametrize("faces, num_vertices, error, message", [
    ([[0, 1, 2]], 3, TypeError, "faces: expected a torch.Tensor or numpy array, got list"),
    (np.array([[0.0, 1.0, 2.0]]), 3, TypeError, "faces: expected integer indices, got torch.float64"),
    (torch.tensor([[True, False, True]]), 3, TypeError, "faces: expected integer indices, got torch.bool"),
    (np.array([[0, 1, 2, 3]]), 4, ValueError, r"faces: expected shape \(F, 3\), got \(1, 4\)"),
    (np.array([[0, 1, 3]]), 3, ValueError, r"faces: expected indices in \[0, 3\), got range \[0, 3\]"),
    (np.array([[0, -1, 2]]), 3, ValueError, r"faces: expected indices in \[0, 3\), got range \[-1, 2\]"),
    (np.array([[0, -1, 2]]), None, ValueError, r"faces: expected indices >= 0, got range \[-1, 2\]"),
])
def test_as_faces_names_what_is_wrong(faces, num_vertices, error, message):
    with pytest.raises(error, match=message):
        as_faces(faces, num_vertices, "cpu")


def test_a_missing_requirement_names_the_package_to_install():
    """After `pip install --no-deps`, commands ended with "No module named 'yaml'", naming neither the package
    (PyYAML) nor the fix."""
    from mesh_decoder._checks import REQUIRED_PACKAGES, error_line

    for module, package in (("yaml", "pyyaml"), ("scipy.spatial", "scipy"), ("torch_geometric.nn", "torch-geometric")):
        exc = ModuleNotFoundError(f"No module named '{module}'", name=module)
        assert error_line(exc, (ValueError,)) == (f"No module named '{module}': mesh_decoder requires {package}: pip "
                                                  f"install {package} (installing mesh_decoder without --no-deps "
                                                  "brings every requirement)")
    other = ModuleNotFoundError("No module named 'pytorch3d'", name="pytorch3d")  # optional: its own message
    assert error_line(other, (ImportError,)) == "No module named 'pytorch3d'"
    assert error_line(other, (ValueError,)) is None
    import configparser
    import pathlib

    cfg = configparser.ConfigParser()
    cfg.read(pathlib.Path(__file__).resolve().parents[1] / "setup.cfg")
    required = {re.split(r"[<>=!~ ]", line.strip())[0].lower()
                for line in cfg["options"]["install_requires"].splitlines() if line.strip()}
    assert required == set(REQUIRED_PACKAGES.values())  # the map follows setup.cfg
