"""Model files: one ``.safetensors`` file holding the weights, buffers and a JSON header.

A saved model is a single safetensors file (no pickle anywhere):

- every entry of ``model.state_dict()`` (weights, normalisation ``mean``/``std``,
  latent prior, PCA bases, the hierarchy operators the layers hold) as a tensor;
  tensors that alias each other are stored once and re-linked on load;
- the safetensors metadata entry ``"mesh_decoder"``: a JSON object with

  ``format`` (``"mesh_decoder.model"``), ``format_version``, ``library_version``,
  ``torch_version``, ``class`` and ``config`` (``model.config()``),
  ``hierarchy_hash`` (template hash of the hierarchy the model was built on, or
  ``null``), ``hierarchy_signature`` (level sizes, spiral shapes, texture size of
  that hierarchy), ``hierarchy_meta`` (that hierarchy's ``meta``: its build
  parameters, or ``null``), ``data_version`` (the synthetic generator version, if
  ``extra_meta`` gave one), ``extra_meta``, ``aliases`` and ``checksum`` (SHA-256
  of every tensor's key, dtype, shape and bytes).

Loading rebuilds the model with the registered class's
``from_config(config, hierarchy)`` and loads the tensors with
``load_state_dict(strict=True, assign=True)``, so dtypes and values are exactly
the saved ones: save -> load -> decode is bitwise identical.

Writes go through :func:`mesh_decoder._atomic.atomic_write`: a process killed during
a save leaves the previous file intact.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import struct
from dataclasses import dataclass
from typing import Any, Mapping

import torch
from torch import nn

from . import __version__
from ._atomic import atomic_write
from ._checks import check_device, check_output_path, out_of_memory
from .errors import ModelFileError, ModelFileNotFoundError, ModelHierarchyMismatchError, unreadable

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "save_model",
    "load_model",
    "read_model_meta",
    "register_model",
    "model_class",
    "registered_models",
    "hierarchy_signature",
]

FORMAT = "mesh_decoder.model"
FORMAT_VERSION = 1
_META_KEY = "mesh_decoder"
_MAX_HEADER = 100_000_000  # bytes; safetensors' own limit


@dataclass
class _Entry:
    module: str | None  # imported lazily on first use
    cls: type | None
    needs_hierarchy: bool


_REGISTRY: dict[str, _Entry] = {
    "PCAModel": _Entry("mesh_decoder.pca", None, False),
    **{name: _Entry("mesh_decoder.nn", None, True) for name in (
        "SpiralDecoder", "ChebDecoder", "PyGDecoder", "JointDecoder",
        "SpiralEncoder", "ChebEncoder", "PyGEncoder", "MeshAutoencoder",
    )},
}


def register_model(cls: type, name: str | None = None, *, needs_hierarchy: bool | None = None) -> type:
    """Make a model class saveable and loadable.

    The class needs ``config() -> dict`` (JSON-able, with ``"class": name``) and
    ``classmethod from_config(config, hierarchy)``. Usable as a decorator.

    Args:
        cls: the ``nn.Module`` subclass.
        name: registry name (default ``cls.__name__``); must be what ``config()["class"]`` holds.
        needs_hierarchy: whether ``from_config`` needs a :class:`MeshHierarchy`; ``None`` (default):
            as registered before, else ``True``. Registering a class again with another value changes
            it; a built-in class refuses one.
    """
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise TypeError(f"cls: expected an nn.Module subclass, got {cls!r}")
    for method in ("config", "from_config"):
        if not callable(getattr(cls, method, None)):
            raise TypeError(f"{cls.__name__}: expected a {method}() method to register it as a model")
    key = name or cls.__name__
    entry = _REGISTRY.get(key)
    if entry is not None:
        held = entry.cls if entry.cls is not None else model_class(key)
        # the same class again, or one defined again (a notebook cell run twice) is taken; another is refused:
        # files saved under the name would load as it
        same = held is cls or (entry.module is None and (held.__module__, held.__qualname__)
                                                      == (cls.__module__, cls.__qualname__))
        if not same:
            raise ValueError(f"name: {key!r} is registered to {held.__module__}.{held.__qualname__}"
                             f"{' (built in)' if entry.module is not None else ''}; give "
                             f"{cls.__module__}.{cls.__qualname__} another name (its config()['class'], which for "
                             "the decoders is the class's own name) and register it under that")
        if needs_hierarchy is None:
            needs_hierarchy = entry.needs_hierarchy
        if entry.module is not None and needs_hierarchy != entry.needs_hierarchy:
            raise ValueError(f"needs_hierarchy: {key!r} is built in with needs_hierarchy={entry.needs_hierarchy}, "
                             f"got {needs_hierarchy}")
        if held is cls and needs_hierarchy == entry.needs_hierarchy:
            return cls
    _REGISTRY[key] = _Entry(None, cls, True if needs_hierarchy is None else bool(needs_hierarchy))
    return cls


def registered_models() -> list[str]:
    """Names of the model classes :func:`load_model` can rebuild."""
    return sorted(_REGISTRY)


def model_class(name: str) -> type:
    """The registered class called ``name`` (importing its module on first use)."""
    entry = _REGISTRY.get(name)
    if entry is None:
        raise ValueError(f"unknown model class {name!r}; expected one of {registered_models()} (a class of "
                         "one's own: import its module and call mesh_decoder.model_files.register_model(ItsClass) "
                         "before loading)")
    if entry.cls is None:
        module = importlib.import_module(entry.module)
        cls = getattr(module, name, None)
        if cls is None:
            raise ValueError(f"model class {name!r}: expected it in {entry.module}, which does not define it")
        entry.cls = cls
    return entry.cls


def hierarchy_signature(hierarchy) -> dict[str, Any]:
    """The sizes of a :class:`~mesh_decoder.hierarchy.MeshHierarchy` a model's
    architecture depends on: vertices per level, spiral shapes and dilations, and
    the texel map size. JSON-able."""
    texel = getattr(hierarchy, "texel_map", None)
    return {
        "vertices": [int(lvl.vertices.shape[0]) for lvl in hierarchy.levels],
        "spirals": [list(lvl.spirals.shape) for lvl in hierarchy.levels],
        "dilations": [int(lvl.dilation) for lvl in hierarchy.levels],
        "texture_size": None if texel is None else [int(s) for s in texel.mask.shape],
    }


def _tensor_bytes(t: torch.Tensor):
    return t.reshape(-1).view(torch.uint8).numpy()  # (numel * itemsize,) raw bytes


def _checksum(tensors: Mapping[str, torch.Tensor]) -> str:
    digest = hashlib.sha256()
    for key in sorted(tensors):
        t = tensors[key]
        digest.update(json.dumps([key, str(t.dtype), list(t.shape)]).encode())
        digest.update(_tensor_bytes(t).data)
    return digest.hexdigest()


def _collect_tensors(model: nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """CPU contiguous tensors to write, and ``alias -> stored key`` for tensors that are
    the same view of the same storage (e.g. one spiral index buffer shared by two layers)."""
    tensors: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    views: dict[tuple, str] = {}
    storages: set[tuple] = set()
    for key, t in model.state_dict(keep_vars=False).items():
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"state_dict[{key!r}]: expected a tensor, got {type(t).__name__} (extra state is not supported)")
        t = t.detach()
        if t.numel() > 0:
            storage = (t.device.type, t.device.index, t.untyped_storage().data_ptr())
            view = storage + (t.storage_offset(), tuple(t.shape), t.stride(), t.dtype)
            if view in views:
                aliases[key] = views[view]
                continue
            views[view] = key
            shared = storage in storages
            storages.add(storage)
        else:
            shared = True
        t = t.to("cpu")
        # A second view into a storage already written must be a copy of its own.
        tensors[key] = t.clone(memory_format=torch.contiguous_format) if shared or not t.is_contiguous() else t
    return tensors, aliases


#: Model classes whose config stores a PyG conv by name (``"conv": None`` when it was a factory function).
_PYG_CLASSES = ("PyGDecoder", "PyGEncoder")


def _class_names(config: Any) -> list[str]:
    """The ``"class"`` of every part of ``config`` below its top level (a joint decoder's graph decoder, an
    autoencoder's encoder and decoder)."""
    values = list(config.values()) if isinstance(config, dict) else list(config) if isinstance(
        config, (list, tuple)) else []
    names = []
    for value in values:
        if isinstance(value, dict) and isinstance(value.get("class"), str):
            names.append(value["class"])
        names.extend(_class_names(value))
    return names


def _check_nested_classes(model: nn.Module, config: dict) -> None:
    """Refuse, before writing, a part of ``model`` whose class ``load_model`` could not rebuild: not
    registered, or registered to another class (the file would load as that one)."""
    kinds = {type(m).__name__: type(m) for m in model.modules()}
    for name in _class_names(config):
        part = kinds.get(name)
        if name not in _REGISTRY:
            where = "" if part is None else f" ({part.__module__}.{part.__qualname__})"
            raise ValueError(f"model: its part {name!r}{where} is not a registered model class, so the file could "
                             f"not be loaded; call mesh_decoder.model_files.register_model({name}) first")
        held = model_class(name)
        if part is not None and part is not held:
            raise ValueError(f"model: its part {name!r} is {part.__module__}.{part.__qualname__}, but that name is "
                             f"registered to {held.__module__}.{held.__qualname__}: the file would load as that one")


def _conv_factory_in(config: Any) -> str | None:
    """The class (``"PyGDecoder"``, ``"PyGEncoder"``) of a part of ``config``, at any depth, whose conv was a
    factory function (``"conv": None``), or ``None`` when there is none."""
    if isinstance(config, dict):
        if config.get("class") in _PYG_CLASSES and config.get("conv") is None:
            return config["class"]
        values = list(config.values())
    elif isinstance(config, (list, tuple)):
        values = list(config)
    else:
        return None
    return next((found for found in map(_conv_factory_in, values) if found is not None), None)


def save_model(
    model: nn.Module,
    path: str | os.PathLike,
    *,
    hierarchy=None,
    extra_meta: Mapping[str, Any] | None = None,
) -> None:
    """Write ``model`` to a single ``.safetensors`` file, atomically.

    Args:
        model: a registered model class instance (see :func:`register_model`), with
            ``config()``.
        path: the file; its parent folders are created.
        hierarchy: the :class:`~mesh_decoder.hierarchy.MeshHierarchy` the model was
            built on. Required for models whose class needs one; its template hash
            and :func:`hierarchy_signature` are recorded and checked on load.
        extra_meta: JSON-able extra information (training settings, metrics...).
            Its ``"data_version"`` entry (e.g. the synthetic generator's
            ``GENERATOR_VERSION``) is also stored at the top level.

    Raises:
        TypeError: ``model`` has no ``config()`` or its config / ``extra_meta`` is not JSON-able.
        ValueError: the class is not registered, a hierarchy is needed and missing, or
            ``path`` is a directory or under a file.
    """
    check_output_path(path, "path")
    if isinstance(model, nn.Module) and isinstance(getattr(model, "_orig_mod", None), nn.Module):
        raise TypeError(f"model: expected the module itself, got {type(model).__name__}, a torch.compile'd "
                        "module: save the module it wraps, model._orig_mod")
    if not isinstance(model, nn.Module) or not callable(getattr(model, "config", None)):
        raise TypeError(f"model: expected an nn.Module with config(), got {type(model).__name__}")
    config = model.config()
    if not isinstance(config, dict) or "class" not in config:
        raise TypeError(f"{type(model).__name__}.config(): expected a dict with a 'class' key, got {config!r}")
    name = config["class"]
    cls = model_class(name)
    if type(model) is not cls:
        raise ValueError(f"model: config names class {name!r} ({cls.__module__}.{cls.__qualname__}), "
                         f"got an instance of {type(model).__module__}.{type(model).__qualname__}")
    _check_nested_classes(model, config)
    if _REGISTRY[name].needs_hierarchy and hierarchy is None:
        raise ValueError(f"hierarchy: {name} is built on a mesh hierarchy; pass hierarchy= so the file "
                         "records which template it belongs to")
    factory_class = _conv_factory_in(config)
    if factory_class is not None:
        raise ValueError(f"model: a {factory_class} built with a conv factory function or a class outside "
                         "torch_geometric.nn cannot be stored (a file "
                         "keeps the conv's class name and load_model rebuilds it from that); build it with a "
                         "torch_geometric.nn class or its name, e.g. 'GCNConv' and conv_kwargs, or save its state_dict")
    extra = dict(extra_meta or {})
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "library_version": __version__,
        "torch_version": torch.__version__,
        "class": name,
        "config": config,
        "hierarchy_hash": None if hierarchy is None else hierarchy.template_hash,
        "hierarchy_signature": None if hierarchy is None else hierarchy_signature(hierarchy),
        "hierarchy_meta": None if hierarchy is None else dict(hierarchy.meta),
        "data_version": extra.get("data_version"),
        "extra_meta": extra,
    }
    for key in ("config", "extra_meta", "hierarchy_meta"):
        try:
            json.dumps(meta[key], allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"{key}: expected JSON-able values, got {exc}") from None
    tensors, aliases = _collect_tensors(model)
    meta["aliases"] = aliases
    meta["checksum"] = _checksum(tensors)
    import safetensors.torch

    data = safetensors.torch.save(tensors, metadata={_META_KEY: json.dumps(meta, sort_keys=True)})
    with atomic_write(path, "wb", suffix=".safetensors") as handle:
        handle.write(data)


def _fail(path, reason: str, error: type[ModelFileError] = ModelFileError) -> ModelFileError:
    return error(f"{os.fspath(path)}: {reason}")


#: Leading bytes of the files a model path is mistaken for, and what each is.
_OTHER_FORMATS = (
    (b"PK\x03\x04", "a zip archive (an .npz, such as a saved hierarchy, or a torch.save file)"),
    (b"\x93NUMPY", "a numpy .npy array"),
    (b"\x80", "a pickle (torch.save's legacy format), which the toolkit never reads"),
    (b"ply", "a PLY mesh"),
    (b"\x89PNG", "a PNG image"),
    (b"\x08", "an ONNX file (a protobuf)"),
)


def _other_format(blob: bytes) -> str | None:
    """What a file whose safetensors header does not parse is, from its first bytes, or ``None``."""
    for magic, kind in _OTHER_FORMATS:
        if blob.startswith(magic):
            return kind
    return None


def _parse_header(path, blob: bytes) -> tuple[dict, int]:
    """The safetensors JSON header and its length; raises ModelFileError naming ``path``."""
    if len(blob) < 8:
        raise _fail(path, f"truncated or not a model file: {len(blob)} bytes, expected an 8-byte "
                          "safetensors header length and a header")
    (size,) = struct.unpack("<Q", blob[:8])
    # asked only once the header fails, and not when a JSON header begins: a truncated safetensors file's
    # header length can begin like a magic (0x80 or 0x08 for 1 file in 16)
    kind = _other_format(blob) if blob[8:9] != b"{" else None
    if size > _MAX_HEADER or 8 + size > len(blob):
        if kind is not None:  # what the file is, not a header length read from its first bytes
            raise _fail(path, f"not a safetensors model file: it looks like {kind}")
        raise _fail(path, f"truncated or not a model file: header of {size} bytes announced, "
                          f"{len(blob) - 8} bytes follow")
    try:
        header = json.loads(blob[8:8 + size].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        looks = f"; it looks like {kind}" if kind is not None else ""
        raise _fail(path, f"not a safetensors model file: unreadable header ({exc}){looks}") from None
    if not isinstance(header, dict):
        raise _fail(path, "not a safetensors model file: the header is not a JSON object")
    return header, size


def _parse_meta(path, header: dict) -> dict[str, Any]:
    metadata = header.get("__metadata__") or {}
    if not isinstance(metadata, dict):
        raise _fail(path, f"not a safetensors model file: expected the header's '__metadata__' to be a JSON "
                          f"object, got {type(metadata).__name__}")
    if _META_KEY not in metadata:
        raise _fail(path, f"not a mesh_decoder model file: no {_META_KEY!r} entry in the safetensors metadata "
                          f"(found keys {sorted(metadata)})")
    try:
        meta = json.loads(metadata[_META_KEY])
    except (TypeError, json.JSONDecodeError) as exc:
        raise _fail(path, f"corrupt model metadata: {exc}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise _fail(path, f"expected format {FORMAT!r}, got {meta.get('format') if isinstance(meta, dict) else meta!r}")
    if type(meta.get("format_version")) is not int or meta["format_version"] != FORMAT_VERSION:  # not 1.0 or true
        raise _fail(path, f"written in model format version {meta.get('format_version')!r} "
                          f"(library {meta.get('library_version')}); this library "
                          f"({__version__}) reads format version {FORMAT_VERSION}")
    for key, kind, want in (("class", str, "a string"), ("config", dict, "a JSON object"),
                            ("checksum", str, "a string"), ("aliases", dict, "a JSON object")):
        if key not in meta:
            raise _fail(path, f"corrupt model metadata: missing {key!r}")
        if not isinstance(meta[key], kind):
            raise _fail(path, f"corrupt model metadata: expected {key!r} to be {want}, "
                              f"got {type(meta[key]).__name__} {meta[key]!r:.60}")
    # optional keys every reader uses as objects (a list as extra_meta was a traceback in sample, fit, render)
    for key in ("extra_meta", "hierarchy_meta"):
        if meta.get(key) is not None and not isinstance(meta[key], dict):
            raise _fail(path, f"corrupt model metadata: expected {key!r} to be a JSON object, "
                              f"got {type(meta[key]).__name__} {meta[key]!r:.60}")
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in meta["aliases"].items()):
        raise _fail(path, f"corrupt model metadata: expected 'aliases' to map tensor names to tensor names, "
                          f"got {meta['aliases']!r:.60}")
    return meta


def _read(path) -> bytes:
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError as exc:
        raise unreadable(path, "the model file", exc, ModelFileError, ModelFileNotFoundError) from None


def read_model_meta(path: str | os.PathLike) -> dict[str, Any]:
    """The JSON metadata of a model file (class, config, versions, hierarchy hash,
    extra meta), without loading its tensors.

    A file shorter than its header says (cut off after the header) is refused here
    too, so a caller learns of it before asking for anything else the model needs.
    """
    try:
        with open(path, "rb") as handle:
            head = handle.read(8)
            size = struct.unpack("<Q", head)[0] if len(head) == 8 else 0
            blob = head + handle.read(min(size, _MAX_HEADER))
            file_size = os.fstat(handle.fileno()).st_size
    except OSError as exc:
        raise unreadable(path, "the model file", exc, ModelFileError, ModelFileNotFoundError) from None
    header, size = _parse_header(path, blob)
    meta = _parse_meta(path, header)
    _check_data_length(path, header, size, file_size)
    return meta


def _check_data_length(path, header: dict, size: int, file_size: int, whole: bool = False) -> None:
    """Refuse a file shorter than its header describes (and with ``whole``, one with bytes after the tensor
    data: safetensors refuses both, in its own words); ``size`` is the header's length."""
    declared = _declared_data_bytes(header)
    if declared is None:
        return
    held = file_size - 8 - size
    if held < declared:
        raise _fail(path, f"truncated: its header describes {declared} bytes of tensor data, the file holds "
                          f"{max(held, 0)}")
    if whole and held > declared:
        raise _fail(path, f"corrupt: {held - declared} bytes follow the {declared} bytes of tensor data its "
                          "header describes")


def _declared_data_bytes(header: dict) -> int | None:
    """The tensor data's length that a safetensors header describes (the largest end
    offset), or ``None`` when an entry is malformed (loading reports that)."""
    end = 0
    for key, entry in header.items():
        if key == "__metadata__":
            continue
        offsets = entry.get("data_offsets") if isinstance(entry, dict) else None
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(type(o) is int for o in offsets)):
            return None
        end = max(end, offsets[1])
    return end


def _check_hierarchy(path, meta: dict, hierarchy, needs_hierarchy: bool) -> None:
    saved_hash = meta.get("hierarchy_hash")
    if hierarchy is None:
        if needs_hierarchy:
            raise _fail(path, f"{meta['class']} needs the mesh hierarchy it was built on "
                              f"(template hash {saved_hash}); pass hierarchy=")
        return
    if meta.get("hierarchy_signature") is None:
        return  # saved without a hierarchy (a PCA model): nothing to compare
    given = hierarchy_signature(hierarchy)
    if saved_hash is not None and hierarchy.template_hash != saved_hash:
        saved = meta["hierarchy_signature"]
        levels = saved.get("vertices") if isinstance(saved, dict) else None
        saved_vertices = levels[0] if isinstance(levels, list) and levels else None  # a header is not trusted
        counts = [f" ({n} vertices)" if isinstance(n, int) else "" for n in (saved_vertices, given["vertices"][0])]
        raise _fail(path, f"model built for template {saved_hash}{counts[0]}, but the given hierarchy is for "
                          f"template {hierarchy.template_hash}{counts[1]}; build the hierarchy from the model's "
                          "template",
                    ModelHierarchyMismatchError)
    if given != meta["hierarchy_signature"]:
        raise _fail(path, f"model built on a hierarchy with {meta['hierarchy_signature']}, the given hierarchy "
                          f"has {given} (different factors, spiral lengths or texture size)",
                    ModelHierarchyMismatchError)


def load_model(
    path: str | os.PathLike,
    hierarchy=None,
    *,
    device: torch.device | str | None = None,
) -> nn.Module:
    """Read a model written by :func:`save_model`.

    Args:
        path: the ``.safetensors`` file.
        hierarchy: the model's :class:`~mesh_decoder.hierarchy.MeshHierarchy`;
            required for hierarchy-based models, optional for a PCA model. Its
            template hash and level sizes must equal the saved ones.
        device: where to put the model; ``None`` (default) uses the hierarchy's
            device, or the CPU.

    Returns:
        The model in eval mode (call ``.train()`` to resume training), with the
        saved dtypes and values.

    Raises:
        ModelFileError: missing, truncated or corrupt file (checksum), another
            format version, an unknown class, another template or hierarchy
            (:class:`~mesh_decoder.errors.ModelHierarchyMismatchError`), or
            tensors that do not fit the rebuilt model (names, shapes, floating versus
            integer dtypes; a PCA model's dtype). The message names the file.
        ValueError: ``device`` is not a device of this machine.
    """
    from safetensors.torch import load as load_safetensors

    if device is not None:
        device = check_device(device, "device")

    blob = _read(path)
    header, size = _parse_header(path, blob)
    meta = _parse_meta(path, header)
    _check_data_length(path, header, size, len(blob), whole=True)
    try:
        tensors = load_safetensors(blob)  # safetensors, not pickle
    except MemoryError:
        raise
    except Exception as exc:  # safetensors raises its own SafetensorError type
        raise _fail(path, f"truncated or corrupt tensor data ({exc})") from None
    if _checksum(tensors) != meta["checksum"]:
        raise _fail(path, "corrupt tensor data: checksum mismatch")
    for alias, target in meta["aliases"].items():
        if target not in tensors:
            raise _fail(path, f"corrupt model metadata: alias {alias!r} points to missing tensor {target!r}")
        tensors[alias] = tensors[target]
    try:
        cls = model_class(meta["class"])
    except ValueError as exc:
        raise _fail(path, str(exc)) from None
    _check_hierarchy(path, meta, hierarchy, _REGISTRY[meta["class"]].needs_hierarchy)
    try:
        with torch.random.fork_rng(devices=[]):  # the initial weights the file replaces leave the caller's stream be
            model = cls.from_config(meta["config"], hierarchy)
    except (TypeError, ValueError, KeyError) as exc:
        raise _fail(path, f"cannot rebuild {meta['class']} from its saved config: {exc}") from None
    except (MemoryError, RuntimeError) as exc:  # sizes in a damaged config: 'out of memory' named no file
        if not out_of_memory(exc):
            raise
        sizes = {k: v for k, v in meta["config"].items() if isinstance(v, int) and not isinstance(v, bool)}
        raise _fail(path, f"cannot rebuild {meta['class']} from its saved config: out of memory building a model "
                          f"of its sizes {sizes} (a damaged config?), the file holds "
                          f"{sum(t.numel() for t in tensors.values()):,} numbers") from None
    built = model.state_dict()
    for key, t in sorted(tensors.items()):
        if key in built and built[key].is_floating_point() != t.is_floating_point():
            raise _fail(path, f"the saved tensors do not fit {meta['class']}: {key!r} is {t.dtype}, expected a "
                              f"{'floating' if built[key].is_floating_point() else 'non-floating'} dtype like "
                              f"{built[key].dtype}")
    # one line for float tensors of another precision than the config builds (the model's own load checks
    # said it once per tensor, all joined into one very long line)
    fixed = "dtype" in meta["config"]  # configs that fix one (PCA); decoders take the precision saved
    other = sorted(k for k, t in tensors.items() if fixed and k in built and t.is_floating_point()
                   and built[k].is_floating_point() and t.dtype != built[k].dtype)
    if other:
        found = sorted({str(tensors[k].dtype) for k in other})
        raise _fail(path, f"the saved tensors do not fit {meta['class']}: {len(other)} float tensor"
                          f"{' is' if len(other) == 1 else 's are'} "
                          f"{', '.join(found)} where its saved config builds {built[other[0]].dtype} "
                          f"({', '.join(other[:3])}{', ...' if len(other) > 3 else ''}); a damaged or edited file?")
    try:
        model.load_state_dict(tensors, strict=True, assign=True)
    except RuntimeError as exc:
        reason = " ".join(str(exc).split())  # torch's message spans lines
        raise _fail(path, f"the saved tensors do not fit {meta['class']}: {reason}") from None
    if device is None and hierarchy is not None:
        device = hierarchy.levels[0].vertices.device
    if device is not None:
        model = model.to(device)
    return model.eval()
