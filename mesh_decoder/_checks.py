"""Input checks whose errors state the expected and the actual value."""

from __future__ import annotations

import argparse
import math
import numbers
import os
from typing import Callable, Sequence

import numpy as np
import torch

from .errors import MeshFileError, UsageError

__all__ = [
    "check_tensor", "same_device", "is_integer", "check_int", "int_value", "positive_int", "non_negative_int",
    "check_bool", "real_number", "int_argument", "real_argument",
    "MAX_SEED", "check_device", "check_output_path", "one_line_error", "out_of_memory",
    "error_line", "as_faces", "check_threads", "check_suffix",
]


def check_tensor(
    x: object,
    name: str,
    shape: Sequence[int | str | None] | None = None,
    dtype: torch.dtype | Sequence[torch.dtype] | None = None,
    device: torch.device | None = None,
) -> torch.Tensor:
    """Check a tensor's type, rank, sizes, dtype and device.

    ``shape`` entries are integers, numpy's too (must match), or strings/``None`` (any size).
    Raises ``TypeError`` for a non-tensor or wrong dtype and ``ValueError`` for a
    wrong shape or device, naming the expected and the found value.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
    if shape is not None:
        shape = tuple(shape)
        pretty = "(" + ", ".join(str(s) for s in shape) + ")"
        if x.dim() != len(shape) or any(
            isinstance(s, numbers.Integral) and s != n for s, n in zip(shape, x.shape)
        ):
            raise ValueError(f"{name}: expected shape {pretty}, got {tuple(x.shape)}")
    if dtype is not None:
        allowed = (dtype,) if isinstance(dtype, torch.dtype) else tuple(dtype)
        if x.dtype not in allowed:
            want = " or ".join(str(d) for d in allowed)
            raise TypeError(f"{name}: expected dtype {want}, got {x.dtype}")
    if device is not None and not same_device(x.device, device):
        raise ValueError(f"{name}: expected a tensor on {device}, got one on {x.device}")
    return x


def as_faces(faces: object, num_vertices: int | None, device: torch.device | str, name: str = "faces") -> torch.Tensor:
    """``(F, 3)`` integer indices (tensor or numpy array) -> int64 tensor on ``device``, every index
    in ``[0, num_vertices)`` (``num_vertices=None``: any index >= 0)."""
    if isinstance(faces, np.ndarray):
        faces = torch.from_numpy(np.ascontiguousarray(faces))
    if not isinstance(faces, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor or numpy array, got {type(faces).__name__}")
    check_tensor(faces, name, shape=("F", 3))
    if faces.is_floating_point() or faces.is_complex() or faces.dtype == torch.bool:
        raise TypeError(f"{name}: expected integer indices, got {faces.dtype}")
    faces = faces.to(device=device, dtype=torch.int64)
    if faces.numel():
        lo, hi = int(faces.min()), int(faces.max())
        if lo < 0 or (num_vertices is not None and hi >= num_vertices):
            want = ">= 0" if num_vertices is None else f"in [0, {num_vertices})"
            raise ValueError(f"{name}: expected indices {want}, got range [{lo}, {hi}]")
    return faces


def same_device(actual: torch.device, wanted: torch.device | str) -> bool:
    """Whether a tensor on ``actual`` is on ``wanted``: the same type, and the same index when ``wanted``
    names one (``"cuda"`` accepts a tensor on ``cuda:0`` or any other CUDA device; ``torch.device("cuda")``
    would equal none of them)."""
    wanted = torch.device(wanted)
    return actual.type == wanted.type and (wanted.index is None or actual.index == wanted.index)


def one_or(batch: int) -> str:
    """The batch sizes an input may have beside a batch of ``batch``, for messages: ``"1 or B"``, or ``"1"``."""
    return "1" if batch == 1 else f"1 or {batch}"


def is_integer(value: object) -> bool:
    """Whether ``value`` is an integer, Python's or numpy's (a bool, numpy's too, is not)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def check_int(value: object, name: str, minimum: int | None = None, maximum: int | None = None) -> int:
    """``value`` as an ``int``: ``TypeError`` if not an integer (bools are not), ``ValueError`` if below
    ``minimum`` or above ``maximum``."""
    if not is_integer(value):
        raise TypeError(f"{name}: expected an integer, got {value!r} ({type(value).__name__})")
    below = minimum is not None and value < minimum
    if maximum is not None and (below or value > maximum):
        raise ValueError(f"{name}: expected an integer in [{'-inf' if minimum is None else minimum}, {maximum}], "
                         f"got {value}")
    if below:
        raise ValueError(f"{name}: expected an integer >= {minimum}, got {value}")
    return int(value)


def int_value(value: object, name: str, expected: str) -> int:
    """``value`` as an ``int`` when it is an integer (Python's or numpy's; bools are not), else a ``TypeError``
    ``"NAME: expected EXPECTED, got TYPE VALUE"`` (``got float 2.0``). The caller checks the range, a
    ``ValueError`` with the same ``expected``: a wrong type and a wrong value of the right type read alike."""
    if not is_integer(value):
        raise TypeError(f"{name}: expected {expected}, got {type(value).__name__} {value!r}")
    return int(value)


def positive_int(value: object, name: str) -> int:
    """``value`` if it is an int >= 1, else a ``TypeError`` (not an integer: a float, a bool, a string) or a
    ``ValueError`` (below 1) naming it."""
    n = int_value(value, name, "a positive int")
    if n < 1:
        raise ValueError(f"{name}: expected a positive int, got {n}")
    return n


def non_negative_int(value: object, name: str) -> int:
    """``value`` if it is an int >= 0, else a ``TypeError`` (not an integer) or a ``ValueError`` (negative)
    naming it."""
    n = int_value(value, name, "a non-negative int")
    if n < 0:
        raise ValueError(f"{name}: expected a non-negative int, got {n}")
    return n


def check_bool(value: object, name: str) -> bool:
    """``value`` as a ``bool``: ``TypeError`` unless it is ``True`` or ``False`` (numpy's bools too).

    A string such as ``"no"`` or a number is refused rather than read by its truth value.
    """
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name}: expected True or False, got {value!r} ({type(value).__name__})")
    return bool(value)


#: The largest seed the command line takes: numpy's legacy and torch's generators all accept it.
MAX_SEED = 2**32 - 1


def real_number(value: object) -> float | None:
    """``value`` as a ``float`` when it is one real number: Python's or numpy's (not a bool), or a 0-d
    integer or floating array or tensor; otherwise ``None`` (the caller names what it expected)."""
    if isinstance(value, torch.Tensor):
        usable = value.dim() == 0 and value.dtype != torch.bool and not value.is_complex()
    elif isinstance(value, np.ndarray):
        usable = value.ndim == 0 and (np.issubdtype(value.dtype, np.integer) or np.issubdtype(value.dtype, np.floating))
    else:
        usable = isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))
    return float(value) if usable else None


def int_argument(minimum: int, maximum: int | None = None) -> Callable[[str], int]:
    """An argparse ``type`` for integers ``>= minimum`` (and ``<= maximum``; argparse prefixes the option's name)."""
    want = f"an integer >= {minimum}" if maximum is None else f"an integer in [{minimum}, {maximum}]"

    def parse(text: str) -> int:
        try:
            return check_int(int(text), "", minimum, maximum)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {want}, got {text!r}") from None

    parse.__name__ = want.removeprefix("an ")
    return parse


def real_argument(lower: float, *, inclusive: bool, what: str = "a finite real number") -> Callable[[str], float]:
    """An argparse ``type`` for finite numbers ``> lower`` (``>= lower`` when ``inclusive``); ``what``
    names them in the error (argparse prefixes the option's name)."""
    bound = f"{'>=' if inclusive else '>'} {lower}"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not (math.isfinite(value) and (value >= lower if inclusive else value > lower)):
            raise argparse.ArgumentTypeError(f"expected {what} {bound}, got {text!r}")
        return value

    parse.__name__ = f"{what.removeprefix('a ')} {bound}"
    return parse


def out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is a failure to allocate: Python's ``MemoryError``, or torch's (a ``RuntimeError``
    on any device), which a command reports in one line."""
    torch_oom = getattr(torch, "OutOfMemoryError", ())
    return isinstance(exc, (MemoryError, torch_oom)) or (
        isinstance(exc, RuntimeError) and "can't allocate memory" in str(exc))


#: The import name of each package the library requires (setup.cfg's install_requires) -> its pip name.
REQUIRED_PACKAGES = {"torch": "torch", "torch_geometric": "torch-geometric", "numpy": "numpy", "scipy": "scipy",
                     "openmesh": "openmesh", "plyfile": "plyfile", "safetensors": "safetensors", "tqdm": "tqdm",
                     "yaml": "pyyaml"}


def error_line(exc: BaseException, kinds: tuple[type[BaseException], ...]) -> str | None:
    """What a command prints after ``error:`` for ``exc``: one line for an error of ``kinds`` (bad input, bad
    files) or for running out of memory; ``None`` for anything else, a bug the caller raises again."""
    if out_of_memory(exc):  # e.g. huge sizes
        return f"out of memory ({one_line_error(exc)}); try smaller sizes"
    if isinstance(exc, ModuleNotFoundError) and (exc.name or "").split(".")[0] in REQUIRED_PACKAGES:
        # a broken install (pip --no-deps): 'No module named 'yaml'' named neither the package nor the fix
        package = REQUIRED_PACKAGES[exc.name.split(".")[0]]
        return (f"{one_line_error(exc)}: mesh_decoder requires {package}: pip install {package} (installing "
                "mesh_decoder without --no-deps brings every requirement)")
    return one_line_error(exc) if isinstance(exc, kinds) else None


def is_terminal(stream) -> bool:
    """Whether ``stream`` is a terminal: the commands draw progress bars only there (a redirected log would
    keep every ``\\r`` update)."""
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def check_threads(threads: int | None, name: str = "--threads") -> int | None:
    """``threads`` if ``None`` or in ``[1, the CPUs of this machine]``, else a
    :class:`~mesh_decoder.errors.UsageError` (a ``ValueError``: the commands exit with status 2, as for ``0``)
    naming ``name`` (torch crashed, with a segmentation fault, on a thread pool far beyond the machine's)."""
    cpus = os.cpu_count() or 1
    if threads is not None and not 1 <= threads <= cpus:
        raise UsageError(f"{name}: expected an integer in [1, {cpus}] (the CPUs of this machine), got {threads}")
    return threads


def check_device(value: object, name: str, *, available: bool = True, option: bool = False) -> torch.device:
    """A ``cpu``, ``cuda``, ``cuda:N`` or ``mps`` device; with ``available``, it must exist here.

    Raises ``ValueError`` naming ``name``, the value and what was expected; with ``option`` (a command-line
    option), a malformed value raises :class:`~mesh_decoder.errors.UsageError` (exit status 2), and a device
    this machine lacks the ``ValueError`` (status 1).
    """
    try:
        device = torch.device(value)  # type: ignore[arg-type]
    except (RuntimeError, TypeError, ValueError):
        device = None
    if device is None or device.type not in ("cpu", "cuda", "mps") or (device.type != "cuda" and device.index):
        raise (UsageError if option else ValueError)(f"{name}: expected cpu, cuda, cuda:N or mps, got {value!r}")
    if available and device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"{name} {value}: MPS is not available on this machine (torch {torch.__version__})")
    if available and device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"{name} {value}: CUDA is not available on this machine (torch {torch.__version__})")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise ValueError(f"{name} {value}: expected a CUDA device index below {count}, this machine has "
                             f"{count} CUDA device{'s' if count != 1 else ''}")
    return device


def check_output_path(path: str | os.PathLike, name: str, *, directory: bool = False) -> str:
    """Check that a file (or, with ``directory``, a folder) can be written at ``path``; returns ``path``.

    Nothing is created. Raises ``ValueError`` naming ``name`` and the path when
    ``path`` is empty (an unset shell variable in ``-o "$RUN"``; not taken as the
    working folder), a folder where a file is wanted (or a file where a folder is),
    or when the nearest existing parent is a file or not writable.
    """
    path = os.fspath(path)
    wanted = "a directory" if directory else "a file path"
    if path == "":
        raise ValueError(f"{name}: expected {wanted}, got ''")
    if not directory and path.endswith(("/", os.sep)):  # abspath would drop the slash and write a file there
        raise ValueError(f"{name} {path}: expected {wanted}, got a folder path (it ends in {path[-1]!r})")
    full = os.path.abspath(path)
    if os.path.exists(full) and os.path.isdir(full) != directory:
        found = "a directory" if os.path.isdir(full) else "an existing file"
        raise ValueError(f"{name} {path}: expected {wanted}, found {found}")
    if not directory and os.path.exists(full) and not os.path.isfile(full):  # a device, FIFO or socket
        from ._atomic import _kind

        raise ValueError(f"{name} {path}: expected a regular file path, found {_kind(full)} (writing replaces the "
                         "file at the path)")
    existing = full if directory else os.path.dirname(full)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise ValueError(f"{name} {path}: expected {wanted}, but {existing} is a file, not a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"{name} {path}: expected a writable location, {existing} is not writable")
    return path


def check_suffix(option: str, path: str | os.PathLike | None, suffixes: Sequence[str]) -> None:
    """Refuse (:class:`~mesh_decoder.errors.UsageError`, exit status 2) an output ``path`` whose name does not
    end in one of ``suffixes`` (case-insensitive); ``None`` (no such output asked for) passes."""
    if path is None:
        return
    ext = os.path.splitext(os.fspath(path))[1].lower()
    if ext not in suffixes:
        raise UsageError(f"{option} {os.fspath(path)}: expected a file name ending in {' or '.join(suffixes)}, got "
                         f"{repr(ext) if ext else 'no extension'}")


def check_not_an_input(option: str, path: str | os.PathLike | None,
                       inputs: Sequence[tuple[str, str | os.PathLike | None]]) -> None:
    """Refuse (``ValueError``) an output ``path`` that is one of the existing input files: ``inputs`` are
    ``(option, path)`` pairs (``None`` paths and folders are skipped); writing the output would replace it.
    ``path`` ``None`` (no such output asked for) passes."""
    if not path or not os.path.exists(path):
        return
    for source, given in inputs:
        if given and os.path.isfile(given) and os.path.samefile(path, given):
            raise ValueError(f"{option} {os.fspath(path)}: expected a file other than the inputs, got the {source} "
                             "file; nothing was written")


def one_line_error(exc: BaseException) -> str:
    """``exc`` as the one line a command prints after ``error:`` (an ``OSError`` names the user's path)."""
    text = str(exc) or type(exc).__name__
    if isinstance(exc, OSError) and (exc.filename or exc.filename2):
        # os.replace(tmp, path) sets filename2 to the destination: name the user's file, not the temporary one
        path = exc.filename2 or exc.filename
        reason = exc.strerror or text
        if isinstance(exc, FileExistsError):
            reason = f"expected a directory, found a file ({reason})"
        text = f"{path}: {reason}"
    return " ".join(text.split())


#: The first bytes of every ``.npy`` file.
NPY_MAGIC = b"\x93NUMPY"


def load_npy(path: str, expected: str) -> np.ndarray:
    """``np.load`` of a ``.npy`` file that never reads pickled data.

    A file that does not start with :data:`NPY_MAGIC` (numpy would take it for pickled data,
    or fail on an empty file) and one numpy cannot load (an object array, a truncated file)
    raise :class:`~mesh_decoder.errors.MeshFileError` naming ``path``, what was ``expected``
    (``"latent codes: ..."``) and what was found.
    """
    if os.path.isdir(path):
        raise MeshFileError(path, f"expected {expected}, found a directory")
    with open(path, "rb") as handle:
        start = handle.read(len(NPY_MAGIC))
    if start != NPY_MAGIC:
        raise MeshFileError(path, f"expected {expected}, found a file that is not .npy (it starts with {start!r})")
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:  # pickled objects refused, a truncated file
        raise MeshFileError(path, f"expected {expected}, could not load it ({one_line_error(exc)})") from None
