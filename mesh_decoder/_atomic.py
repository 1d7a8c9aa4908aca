"""Atomic file writes: write a temporary file beside the target, fsync, rename."""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import stat
import tempfile
from typing import IO, Any, Iterator, Mapping

__all__ = ["atomic_write", "write_json"]


def _kind(path: str) -> str:
    """What a path that is neither a regular file nor a directory is."""
    mode = os.stat(path).st_mode
    for test, kind in ((stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return kind
    return "no regular file"


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb", suffix: str | None = None) -> Iterator[IO]:
    """Open a temporary file next to ``path``; on success rename it over ``path``.

    If the block raises, or the process is killed, ``path`` keeps its previous
    content and the temporary file (``.<name>.*.tmp``) is removed or left behind
    under a name no reader opens. ``suffix`` keeps a file extension on the
    temporary name for writers that dispatch on it (``np.savez`` appends ``.npz``).

    A symlink is followed: the file it points to is replaced, the link stays.
    An existing file keeps its permission bits; a new one gets ``0o666 & ~umask``.
    A text mode writes UTF-8 with the line ends as written (``"\n"``), whatever the
    locale or platform (Windows would write its code page and ``"\r\n"``).

    Raises:
        OutputPathError: ``path`` is a directory or another non-regular file (a device such as
            ``/dev/null``, a FIFO, a socket: renaming over it would replace it), or one of its parents is a file
            (an ``OSError`` and a ``ValueError`` naming ``path``); nothing is created.
        OSError: creating, writing or renaming the temporary file failed (a read-only
            folder, a full disk); its ``filename`` is ``path`` as given, not the
            temporary name, unless the error named another file.
    """
    from .errors import OutputPathError

    given = os.fspath(path)
    path = os.path.realpath(given)
    if os.path.isdir(path):
        raise OutputPathError(errno.EISDIR, "expected a file path, found a directory", given)
    if os.path.exists(path) and not os.path.isfile(path):  # renaming over it would replace a device or a FIFO
        raise OutputPathError(errno.EINVAL, f"expected a regular file path, found {_kind(path)}", given)
    directory = os.path.dirname(path)
    existing = directory
    while not os.path.lexists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise OutputPathError(errno.ENOTDIR, f"expected a file path, but {existing} is a file, not a directory",
                              given)
    os.makedirs(directory, exist_ok=True)
    base = os.path.basename(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{base}.", suffix=(suffix or "") + ".tmp", dir=directory)
    except OSError as exc:  # a read-only folder: name the user's file, not the temporary one
        if exc.strerror is not None:
            exc.filename = given
        raise
    try:
        text = {} if "b" in mode else {"encoding": "utf-8", "newline": ""}  # the same bytes on every platform
        with os.fdopen(fd, mode, **text) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        try:  # mkstemp creates 0600: keep the target's permissions, or give a new file the usual ones
            perms = stat.S_IMODE(os.stat(path).st_mode)
        except FileNotFoundError:
            mask = os.umask(0)
            os.umask(mask)
            perms = 0o666 & ~mask
        os.chmod(tmp, perms)
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(exc, OSError) and exc.strerror is not None and exc.filename in (None, tmp) \
                and exc.filename2 is None:  # (an OSError("message") would print "[Errno None] None: path")
            exc.filename = given  # a full disk while writing: name the file that was being written
        raise
    with contextlib.suppress(OSError):  # make the rename durable where the OS allows it
        dfd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def _jsonable(value: Any) -> Any:
    """``value`` with non-finite floats as ``null``/``"inf"``/``"-inf"`` and dtypes/devices as strings."""
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, Mapping):
        # keys JSON takes itself (str, int, float, bool, None) as json.dumps writes them; others as str()
        return {k if k is None or isinstance(k, (str, int, float, bool)) else str(k): _jsonable(v)
                for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if type(value).__module__ == "torch" and type(value).__name__ in ("dtype", "device"):
        return str(value)
    return value


def write_json(path: str | os.PathLike, payload: Mapping[str, Any], indent: int = 2) -> None:
    """Write ``payload`` as standard JSON, atomically.

    NaN becomes ``null`` and infinities the strings ``"inf"``/``"-inf"``, so any
    strict JSON reader opens the file (Python's own ``NaN`` tokens are not JSON).
    """
    text = json.dumps(_jsonable(payload), indent=indent, allow_nan=False)
    with atomic_write(path, "w") as handle:
        handle.write(text + "\n")
