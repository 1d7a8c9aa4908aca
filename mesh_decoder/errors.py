"""Exception types.

Every error raised on bad input is a :class:`ValueError` (or :class:`TypeError`)
subclass whose message states what was expected, what was found and, for files,
which file. A file that is not there is also a :class:`FileNotFoundError`
(:class:`MissingFileError`), as :func:`open` and :func:`torch.load` report it.
"""

from __future__ import annotations

import errno
import os

__all__ = [
    "MeshError", "MeshValidationError", "MeshFileError", "HierarchyError", "ModelFileError", "OutputPathError",
    "MissingFileError", "HierarchyNotFoundError", "MeshFileNotFoundError", "ModelFileNotFoundError",
    "ModelHierarchyMismatchError", "UsageError",
]


def shown_path(path: str | os.PathLike) -> str:
    """``path`` as an error message names it: an empty one (an unset shell variable) as ``'' (an empty path)``,
    which a bare ``": reason"`` would hide."""
    return os.fspath(path) or "'' (an empty path)"


class MeshError(ValueError):
    """Base class of the toolkit's input errors."""


class UsageError(ValueError):
    """A command-line option with a malformed value, or options that do not go together, found before any
    file is read: ``mesh-decoder`` exits with status 2 for it (as for argparse's own errors), and with 1 for
    bad files and paths and for work that failed."""


class MeshValidationError(MeshError):
    """A mesh's arrays are inconsistent (bad indices, NaN, non-manifold, ...)."""


class UVOverlapError(MeshValidationError):
    """UV triangles overlap where a texel map needs each texel centre in one triangle (mirrored or stacked
    islands). ``problem`` is the finding; the message adds ``remedy``, the way to allow it where it was raised
    (an interface that builds the map on a caller's behalf re-raises it with its own option)."""

    def __init__(self, problem: str, remedy: str):
        self.problem = problem
        self.remedy = remedy
        super().__init__(f"{problem}; {remedy}")


class MeshFileError(MeshError):
    """A mesh file could not be read or written.

    Args:
        path: the file.
        reason: what was wrong, stating the expected and the found value.
        line: 1-based line number (text formats) or element description, if known.
    """

    def __init__(self, path: str | os.PathLike, reason: str, line: int | str | None = None):
        self.path = os.fspath(path)
        self.reason = reason
        self.line = line
        where = shown_path(self.path)
        if line is not None:
            where += f", line {line}" if isinstance(line, int) else f", {line}"
        super().__init__(f"{where}: {reason}")


class HierarchyError(MeshError):
    """A hierarchy cannot be built, or a saved one is corrupt or does not match."""


class ModelFileError(MeshError):
    """A saved model is corrupt or does not match its template."""


class ModelHierarchyMismatchError(ModelFileError):
    """A model file was built on another hierarchy than the one given to load it (another template, or other
    level sizes, spiral lengths or texture size)."""


class _PathMessage:
    """The message ``"PATH: reason"`` of an :class:`OSError` built as ``(errno, reason, path)``."""

    filename: str
    strerror: str

    def __str__(self) -> str:
        return f"{shown_path(self.filename)}: {self.strerror}"


class OutputPathError(_PathMessage, OSError, MeshError):
    """A file cannot be written at a path: the path is a directory, or one of its parents is a file.

    Both an :class:`OSError` (``errno``, ``strerror`` and ``filename``: the path as given) and a
    :class:`ValueError`; the message is ``"PATH: reason"``.
    """


class MissingFileError(_PathMessage, FileNotFoundError, MeshError):
    """A path where there is no file: a :class:`FileNotFoundError` (``errno`` ENOENT, ``filename``
    the path as given) and a :class:`ValueError`; its subclasses are also the loader's own error
    (e.g. :class:`HierarchyNotFoundError` a :class:`HierarchyError`). The message is ``"PATH: reason"``.

    Args:
        path: the path as given.
        reason: what was expected and found (default ``"no such file"``).
    """

    def __init__(self, path: str | os.PathLike, reason: str = "no such file"):
        super().__init__(errno.ENOENT, reason, os.fspath(path))


def unreadable(path: str | os.PathLike, what: str, exc: OSError, error: type[Exception],
               missing: type[MissingFileError]) -> Exception:
    """The error for a file ``open`` or ``read`` failed on with ``exc``: ``missing`` when nothing is
    there, else ``error``; the message is ``"PATH: cannot read WHAT (strerror)"``."""
    reason = f"cannot read {what} ({exc.strerror or exc})"
    if isinstance(exc, FileNotFoundError):
        return missing(path, reason)
    return error(f"{shown_path(path)}: {reason}")


class HierarchyNotFoundError(MissingFileError, HierarchyError):
    """A saved hierarchy that is not there."""


class MeshFileNotFoundError(MissingFileError, MeshFileError):
    """A mesh file or folder of mesh files that is not there (``path``, ``reason`` and ``line`` as
    :class:`MeshFileError`'s, ``line`` ``None``)."""

    def __init__(self, path: str | os.PathLike, reason: str = "no such file"):
        MissingFileError.__init__(self, path, reason)
        self.path, self.reason, self.line = os.fspath(path), reason, None


class ModelFileNotFoundError(MissingFileError, ModelFileError):
    """A model file that is not there."""
