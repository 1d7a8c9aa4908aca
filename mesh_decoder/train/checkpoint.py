"""Training checkpoints: one safetensors file, written atomically, no pickle.

A checkpoint holds everything needed to continue a run bit for bit:

- tensors (safetensors): the model's ``state_dict`` (``model/<key>``), the
  optimizer's per-parameter state (``optim/<param index>/<name>``, e.g. Adam's
  ``step``, ``exp_avg``, ``exp_avg_sq``) and random generator states as uint8
  tensors (``rng/<name>``, from ``torch.Generator.get_state()``);
- a JSON document in the safetensors metadata entry ``"mesh_decoder.checkpoint"``:
  ``format``, ``format_version``, library and torch versions, the training
  config, epoch / step counters, the optimizer's param groups and non-tensor
  state, the learning-rate scheduler's ``state_dict``, the data generator
  version, the template hash, the loss history, and a SHA-256 ``checksum`` of
  every tensor's key, dtype, shape and bytes.

The file is written with :func:`mesh_decoder._atomic.atomic_write`: a process
killed while saving leaves the previous checkpoint untouched. ``torch.load`` is
never needed to read one.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from dataclasses import dataclass
from typing import IO, Any, Mapping

import torch

from .. import __version__
from .._atomic import atomic_write
from ..errors import ModelFileError, ModelFileNotFoundError, unreadable

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_VERSION",
    "CheckpointError",
    "CheckpointNotFoundError",
    "Checkpoint",
    "save_checkpoint",
    "load_checkpoint",
    "read_checkpoint_meta",
    "check_training_meta",
    "read_safetensors_metadata",
]

CHECKPOINT_FORMAT = "mesh_decoder.checkpoint"
CHECKPOINT_VERSION = 1
_META_KEY = "mesh_decoder.checkpoint"
_MAX_HEADER = 100_000_000  # bytes; safetensors' own limit
_CHUNK = 1 << 20


class CheckpointError(ModelFileError):
    """A checkpoint file is missing, truncated, corrupt or of another format; names the file."""


class CheckpointNotFoundError(ModelFileNotFoundError, CheckpointError):
    """A checkpoint that is not there (also a ``FileNotFoundError``)."""


@dataclass
class Checkpoint:
    """A loaded checkpoint.

    Attributes:
        path: the file.
        meta: the JSON document (see the module docstring).
        model_state: the model's ``state_dict`` tensors.
        optimizer_state: an optimizer ``state_dict`` (``{"state": ..., "param_groups": ...}``).
        scheduler_state: the scheduler's ``state_dict`` or ``None``.
        rng_states: name -> uint8 generator state.
    """

    path: str
    meta: dict[str, Any]
    model_state: dict[str, torch.Tensor]
    optimizer_state: dict[str, Any] | None
    scheduler_state: dict[str, Any] | None
    rng_states: dict[str, torch.Tensor]

    def restore(self, model: torch.nn.Module, optimizer=None, scheduler=None,
                generators: Mapping[str, torch.Generator] | None = None) -> None:
        """Load the saved states into ``model`` (strict), ``optimizer``, ``scheduler`` and ``generators``.

        Raises:
            CheckpointError: the saved tensors do not fit ``model``, or a generator state is missing.
        """
        try:
            model.load_state_dict(self.model_state, strict=True)
        except RuntimeError as exc:
            raise CheckpointError(f"{self.path}: the saved model tensors do not fit the model built from its "
                                  f"config: {exc}") from None
        if optimizer is not None:
            if self.optimizer_state is None:
                raise CheckpointError(f"{self.path}: expected an optimizer state, the checkpoint has none")
            try:
                optimizer.load_state_dict(self.optimizer_state)
            except (ValueError, KeyError, RuntimeError) as exc:
                raise CheckpointError(f"{self.path}: the saved optimizer state does not fit: {exc}") from None
        if scheduler is not None and self.scheduler_state is not None:
            scheduler.load_state_dict(self.scheduler_state)
        for name, generator in (generators or {}).items():
            if name not in self.rng_states:
                raise CheckpointError(f"{self.path}: expected a saved state of random generator {name!r}, "
                                      f"found {sorted(self.rng_states)}")
            generator.set_state(self.rng_states[name])


def _checksum(tensors: Mapping[str, torch.Tensor]) -> str:
    digest = hashlib.sha256()
    for key in sorted(tensors):
        t = tensors[key]
        digest.update(json.dumps([key, str(t.dtype), list(t.shape)]).encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().data if t.numel() else b"")
    return "sha256:" + digest.hexdigest()


def _own(t: torch.Tensor) -> torch.Tensor:
    """A contiguous CPU copy with its own storage (safetensors refuses shared storage)."""
    return t.detach().to("cpu").clone(memory_format=torch.contiguous_format)


def _jsonable(value: Any, where: str) -> Any:
    if isinstance(value, tuple):
        value = list(value)
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{where}: expected JSON-able values in a checkpoint, got {exc}") from None
    return value


def _write_all(handle: IO[bytes], data: bytes) -> None:
    """Write ``data`` in 1 MiB pieces."""
    view = memoryview(data)
    for start in range(0, len(view), _CHUNK):
        handle.write(view[start:start + _CHUNK])


def save_checkpoint(
    path: str | os.PathLike,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler=None,
    *,
    generators: Mapping[str, torch.Generator] | None = None,
    rng_states: Mapping[str, torch.Tensor] | None = None,
    meta: Mapping[str, Any] | None = None,
) -> None:
    """Write a checkpoint atomically (see the module docstring).

    Args:
        path: the ``.safetensors`` file; parent folders are created.
        model: its ``state_dict`` is saved.
        optimizer: its state (tensors in safetensors, param groups in JSON), or ``None``.
        scheduler: a learning-rate scheduler (``state_dict`` in JSON), or ``None``.
        generators: name -> ``torch.Generator`` whose current state is saved.
        rng_states: name -> uint8 state saved as given (e.g. a state captured earlier).
        meta: JSON-able training state (config, counters, history, versions...).

    Raises:
        TypeError: ``meta``, the param groups or the scheduler state are not JSON-able.
    """
    if not isinstance(model, torch.nn.Module):
        swapped = " (save_checkpoint takes the path first: save_checkpoint(path, model, ...))" if isinstance(
            path, torch.nn.Module) else ""
        raise TypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}{swapped}")
    tensors: dict[str, torch.Tensor] = {}
    for key, t in model.state_dict().items():
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"model state {key!r}: expected a tensor, got {type(t).__name__}")
        tensors[f"model/{key}"] = _own(t)
    optim_json = None
    if optimizer is not None:
        state = optimizer.state_dict()
        optim_json = {"param_groups": _jsonable(state["param_groups"], "optimizer param_groups"), "state": {}}
        for index, entries in state["state"].items():
            others = {}
            for name, value in entries.items():
                if isinstance(value, torch.Tensor):
                    tensors[f"optim/{index}/{name}"] = _own(value)
                else:
                    others[name] = _jsonable(value, f"optimizer state {index}.{name}")
            optim_json["state"][str(index)] = others
    states = {name: g.get_state() for name, g in (generators or {}).items()}
    states.update(rng_states or {})
    for name, state in states.items():
        tensors[f"rng/{name}"] = _own(state)
    document = dict(_jsonable(dict(meta or {}), "meta"))
    document.update(  # the reserved entries win over same-named meta keys
        format=CHECKPOINT_FORMAT,
        format_version=CHECKPOINT_VERSION,
        library_version=__version__,
        torch_version=torch.__version__,
        optimizer=optim_json,
        scheduler=None if scheduler is None else _jsonable(scheduler.state_dict(), "scheduler state"),
        rng=sorted(states),
        checksum=_checksum(tensors),
    )
    import safetensors.torch

    data = safetensors.torch.save(tensors, metadata={_META_KEY: json.dumps(document, sort_keys=True, allow_nan=False)})
    with atomic_write(path, "wb", suffix=".safetensors") as handle:
        _write_all(handle, data)


def read_safetensors_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The ``__metadata__`` entries of a safetensors file's header (no tensors read).

    Raises:
        CheckpointError: the file cannot be read or is not a safetensors file.
    """
    path = os.fspath(path)
    try:
        with open(path, "rb") as handle:
            head = handle.read(8)
            if len(head) < 8:
                raise CheckpointError(f"{path}: truncated or not a safetensors file ({len(head)} bytes)")
            (size,) = struct.unpack("<Q", head)
            if size > _MAX_HEADER:
                raise CheckpointError(f"{path}: not a safetensors file: expected an 8-byte header length first, "
                                      f"found {head!r}")
            blob = handle.read(size)
    except OSError as exc:
        raise unreadable(path, "the file", exc, CheckpointError, CheckpointNotFoundError) from None
    if len(blob) < size:
        raise CheckpointError(f"{path}: truncated: header of {size} bytes announced, {len(blob)} present")
    try:
        header = json.loads(blob.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: not a safetensors file: unreadable header ({exc})") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: not a safetensors file: the header is not a JSON object")
    metadata = header.get("__metadata__") or {}
    return {str(k): str(v) for k, v in metadata.items()}


def is_checkpoint(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a training checkpoint (a safetensors file with checkpoint metadata); ``False`` for
    anything else, unreadable files included."""
    try:
        return CHECKPOINT_FORMAT in read_safetensors_metadata(path)
    except CheckpointError:
        return False


def _parse(path: str, metadata: Mapping[str, str]) -> dict[str, Any]:
    if _META_KEY not in metadata:
        raise CheckpointError(f"{path}: not a mesh_decoder training checkpoint (no {_META_KEY!r} entry in the "
                              f"safetensors metadata; found {sorted(metadata)})")
    try:
        meta = json.loads(metadata[_META_KEY])
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: corrupt checkpoint metadata ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: expected format {CHECKPOINT_FORMAT!r}, got "
                              f"{meta.get('format') if isinstance(meta, dict) else meta!r}")
    if meta.get("format_version") != CHECKPOINT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format version {meta.get('format_version')!r} (library "
                              f"{meta.get('library_version')}); this library reads version {CHECKPOINT_VERSION}")
    return meta


def check_training_meta(path: str, meta: Mapping[str, Any]) -> Mapping[str, Any]:
    """``meta`` if it is the JSON document of a checkpoint written by ``train()``, else
    :class:`CheckpointError` naming ``path`` and the first entry missing or of the wrong type
    (a checkpoint from :func:`save_checkpoint` alone holds no training state)."""
    for key, ok, want in (
        ("config", lambda v: isinstance(v, dict), "a JSON object"),
        ("epoch", _count, "an integer >= 0"), ("step", _count, "an integer >= 0"),
        ("batch_in_epoch", _count, "an integer >= 0"),
        ("history", lambda v: isinstance(v, list), "a list"),
        ("rng", lambda v: isinstance(v, list) and "sampler" in v, "a list naming the 'sampler' generator"),
    ):
        if key not in meta:
            raise CheckpointError(f"{path}: not a training checkpoint of train(): no {key!r} in its metadata")
        if not ok(meta[key]):
            raise CheckpointError(f"{path}: corrupt training state: expected {key!r} to be {want}, "
                                  f"got {meta[key]!r:.60}")
    return meta


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def read_checkpoint_meta(path: str | os.PathLike) -> dict[str, Any]:
    """The JSON document of a checkpoint, without reading its tensors."""
    path = os.fspath(path)
    return _parse(path, read_safetensors_metadata(path))


def load_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Read and verify a checkpoint written by :func:`save_checkpoint`.

    Raises:
        CheckpointError: missing, truncated or corrupt file (checksum), or another format;
            the message names the file.
    """
    from safetensors.torch import load as load_safetensors

    path = os.fspath(path)
    meta = read_checkpoint_meta(path)
    try:
        with open(path, "rb") as handle:
            blob = handle.read()
        tensors = load_safetensors(blob)  # safetensors, not pickle
    except OSError as exc:
        raise unreadable(path, "the checkpoint", exc, CheckpointError, CheckpointNotFoundError) from None
    except MemoryError:
        raise
    except Exception as exc:  # safetensors raises its own error type for truncated data
        raise CheckpointError(f"{path}: truncated or corrupt tensor data ({exc})") from None
    if _checksum(tensors) != meta.get("checksum"):
        raise CheckpointError(f"{path}: corrupt checkpoint: tensor checksum mismatch")
    model_state = {k[len("model/"):]: t for k, t in tensors.items() if k.startswith("model/")}
    rng_states = {k[len("rng/"):]: t for k, t in tensors.items() if k.startswith("rng/")}
    optimizer_state = None
    saved = meta.get("optimizer")
    if saved is not None:
        state: dict[int, dict[str, Any]] = {int(i): dict(v) for i, v in saved["state"].items()}
        for key, t in tensors.items():
            if key.startswith("optim/"):
                _, index, name = key.split("/", 2)
                state.setdefault(int(index), {})[name] = t
        optimizer_state = {"state": state, "param_groups": saved["param_groups"]}
    missing = [name for name in meta.get("rng", []) if name not in rng_states]
    if missing:
        raise CheckpointError(f"{path}: corrupt checkpoint: random generator states {missing} are listed but missing")
    return Checkpoint(path, meta, model_state, optimizer_state, meta.get("scheduler"), rng_states)
