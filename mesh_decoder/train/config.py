r"""Training configuration: YAML or JSON files, validated into dataclasses.

A configuration has five sections; every key is optional and has the default
shown (``null`` is YAML's ``None``)::

    template:            # the mesh every training mesh is registered to
      kind: face         # face | head | file
      vertices: 5023     # vertex count of a built-in template
      seed: 0
      path: null         # the mesh file when kind is "file"
    hierarchy:           # build_hierarchy() parameters
      factors: null      # null: the preset's, else [4, 4, 4, 4]
      spiral_length: 9   # an int or one per level
      dilation: 1
      texture_size: null # null: 256 for joint models, none otherwise; 0: none
      path: null         # a saved hierarchy (.npz) of the template to use instead of building one
                         # (with the factors it was built with; spiral_length/dilation must not exceed its)
      allow_uv_overlap: false  # let UV islands overlap in the texel map (mirrored halves)
      cache_dir: true    # true: the default cache, false: none, or a folder
    data:
      source: synthetic  # synthetic | folder
      n: 2000            # synthetic faces drawn before splitting
      seed: 0            # seeds the draw and the split
      split: interpolation   # interpolation | extrapolation (synthetic only)
      test_fraction: 0.1     # interpolation split
      key: jaw_open          # extrapolation split: test = params[key] > threshold
      threshold: 0.7
      generator_seed: 0      # layout of the synthetic generator's detail bumps
      root: null             # folder of registered meshes (source: folder)
      pattern: "*.obj|*.ply|*.off"
      align: false           # rigidly align every folder mesh to the template
      scale: false           # with align, also fit a uniform scale per mesh
      norm_eps: 0.001        # lower bound of the per-vertex std (normalisation), in the data's units
                             # (mm for the built-in faces; lower it for meshes in metres: train warns)
    model:
      decoder: null      # spiral | cheb | pyg; null: the preset's, else spiral
      encoder: null      # spiral | cheb | pyg; null: as the decoder (spiral for pyg)
      preset: null       # spiralnet++-coma | coma: defaults of the keys below
      joint: false       # shape + per-vertex colour, 6 channels (the mesh texture branch)
      latent_size: null  # null: the preset's, else 16 (spiral, pyg) or 8 (cheb)
      channels: null     # null: the preset's, else [32, 32, 32, 64] / [16, 16, 16, 32] (cheb)
      K: null            # Chebyshev order; null: the preset's, else 6
      conv: GCNConv      # torch_geometric.nn conv class of the pyg decoder and pyg encoder
      conv_kwargs: {}
      pseudo: null       # pyg decoder/encoder edge attributes: cartesian | spherical | distance (GMMConv, NNConv)
      activation: elu
    training:
      epochs: 300
      batch_size: 32
      lr: 0.001
      lr_schedule: exponential   # exponential | step | constant (per epoch)
      lr_decay: 0.99             # gamma of the schedule
      decay_step: 1              # epochs per decay of the step schedule
      weight_decay: 0.0          # Adam's L2 penalty
      color_weight: 1.0          # weight of the colour L1 term (joint)
      seed: 0                    # parameter initialisation and data order
      checkpoint_every: 1        # epochs between checkpoints (the last epoch always saves)
      validate_every: 1          # epochs between test-split measurements (the last epoch always
                                 # measures when any do); 0: never
      device: cpu                # cpu | cuda | cuda:N | mps

Unknown keys and values of the wrong type raise :class:`TrainConfigError`
naming the key (``model.latent_size``) and the file.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import json
import math
import numbers
import os
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Literal, Mapping, Union

from ..errors import MissingFileError, unreadable

__all__ = [
    "TrainConfigError",
    "TrainConfigNotFoundError",
    "TemplateConfig",
    "HierarchyConfig",
    "DataConfig",
    "ModelConfig",
    "TrainingConfig",
    "TrainConfig",
    "load_config",
    "save_config",
    "config_differences",
]


class TrainConfigError(ValueError):
    """A training configuration is invalid: names the key, the expected and the found value, and the file."""


class TrainConfigNotFoundError(MissingFileError, TrainConfigError):
    """A config file that is not there (also a ``FileNotFoundError``)."""


@dataclass
class TemplateConfig:
    """The template mesh. ``kind``: ``"face"`` / ``"head"`` (built-in, ``vertices``, ``seed``) or ``"file"`` (``path``)."""

    kind: Literal["face", "head", "file"] = "face"
    vertices: int = 5023
    seed: int = 0
    path: Union[str, None] = None


@dataclass
class HierarchyConfig:
    """Arguments of :func:`mesh_decoder.hierarchy.build_hierarchy`.

    ``factors=None`` takes the preset's (``[4, 4, 4, 4]`` without a preset);
    ``texture_size=None`` builds a 256 x 256 texel map for joint models only, ``0`` never.
    ``allow_uv_overlap``: let UV triangles overlap in the texel map (the lowest face colours a shared texel).
    ``path``: a saved hierarchy (``save_hierarchy``, ``mesh-decoder hierarchy -o``, or COMA's or
    Neural3DMM's down/up-sampling matrices through ``hierarchy_from_matrices``) of the template, used instead of building one: ``factors`` then states the
    factors it was built with (checked against its levels), and ``texture_size``, ``allow_uv_overlap`` and
    ``cache_dir`` are not used (its texel map, if any, is its own).
    ``cache_dir``: ``True`` (the default cache folder), ``False`` (no cache) or a folder.
    """

    factors: Union[list[float], None] = None
    spiral_length: Union[int, list[int]] = 9
    dilation: Union[int, list[int]] = 1
    texture_size: Union[int, None] = None
    allow_uv_overlap: bool = False
    cache_dir: Union[bool, str] = True
    path: Union[str, None] = None


@dataclass
class DataConfig:
    """The training meshes: synthetic morphable faces or a folder of registered meshes."""

    source: Literal["synthetic", "folder"] = "synthetic"
    n: int = 2000
    seed: int = 0
    split: Literal["interpolation", "extrapolation"] = "interpolation"
    test_fraction: float = 0.1
    key: str = "jaw_open"
    threshold: float = 0.7
    generator_seed: int = 0
    root: Union[str, None] = None
    pattern: str = "*.obj|*.ply|*.off"
    align: bool = False
    scale: bool = False
    norm_eps: float = 1e-3


@dataclass
class ModelConfig:
    """The autoencoder. ``None`` entries take the preset's value, else the decoder's default."""

    decoder: Union[Literal["spiral", "cheb", "pyg"], None] = None
    encoder: Union[Literal["spiral", "cheb", "pyg"], None] = None
    preset: Union[str, None] = None
    joint: bool = False
    latent_size: Union[int, None] = None
    channels: Union[list[int], None] = None
    K: Union[int, None] = None
    conv: str = "GCNConv"
    conv_kwargs: dict[str, Any] = field(default_factory=dict)
    pseudo: Union[Literal["cartesian", "spherical", "distance"], None] = None
    activation: str = "elu"


@dataclass
class TrainingConfig:
    """Optimisation: Adam with a per-epoch learning-rate schedule, L1 loss in normalised units."""

    epochs: int = 300
    batch_size: int = 32
    lr: float = 1e-3
    lr_schedule: Literal["exponential", "step", "constant"] = "exponential"
    lr_decay: float = 0.99
    decay_step: int = 1
    weight_decay: float = 0.0
    color_weight: float = 1.0
    seed: int = 0
    checkpoint_every: int = 1
    validate_every: int = 1
    device: str = "cpu"


_SECTIONS: dict[str, type] = {
    "template": TemplateConfig,
    "hierarchy": HierarchyConfig,
    "data": DataConfig,
    "model": ModelConfig,
    "training": TrainingConfig,
}

#: Keys that may differ between a checkpoint's config and the config it is resumed with.
RESUMABLE_KEYS = frozenset({"training.epochs", "training.checkpoint_every", "training.validate_every",
                            "training.device", "hierarchy.cache_dir"})


@dataclass
class TrainConfig:
    """A validated training configuration (see the module docstring for every key).

    Build it with :meth:`from_dict` or :func:`load_config`; :meth:`to_dict` gives
    the JSON-able form stored in every checkpoint and model file.

    Attributes:
        template, hierarchy, data, model, training: the sections.
        source: the file it was read from, or ``None`` (used in error messages).
    """

    template: TemplateConfig = field(default_factory=TemplateConfig)
    hierarchy: HierarchyConfig = field(default_factory=HierarchyConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    source: Union[str, None] = field(default=None, compare=False)

    @classmethod
    def from_dict(cls, config: Mapping[str, Any] | None, source: str | os.PathLike | None = None) -> "TrainConfig":
        """Validate a nested dict (as read from YAML/JSON).

        Raises:
            TrainConfigError: an unknown key, a value of the wrong type or out of range,
                or inconsistent keys; the message names the key and ``source``.
        """
        where = os.fspath(source) if source is not None else None
        if config is None:
            config = {}
        if not isinstance(config, Mapping):
            raise _error(where, None, f"expected a mapping of sections {sorted(_SECTIONS)}, got {_kind(config)}")
        _reject_unknown(config, _SECTIONS, None, where)
        sections = {}
        for name, section_cls in _SECTIONS.items():
            value = config.get(name)
            if value is None:
                value = {}
            if not isinstance(value, Mapping):
                raise _error(where, name, f"expected a mapping of keys, got {_kind(value)}")
            sections[name] = _build_section(section_cls, value, name, where)
        result = cls(**sections, source=where)
        result.validate()
        return result

    def to_dict(self) -> dict[str, Any]:
        """The JSON-able nested dict (all keys, defaults filled in)."""
        return {name: dataclasses.asdict(getattr(self, name)) for name in _SECTIONS}

    def resolved_dict(self) -> dict[str, Any]:
        """:meth:`to_dict` with the ``null`` keys that stand for a preset's or a built-in value replaced
        by it (``model.decoder``, ``encoder``, ``latent_size``, ``channels``, ``K``, ``hierarchy.factors``,
        ``texture_size``): two configs of the same model and hierarchy give the same dict."""
        d = self.to_dict()
        d["model"].update(decoder=self.decoder_kind, encoder=self.encoder_kind, latent_size=self.latent_size,
                          channels=self.channels, K=self.K)
        d["hierarchy"].update(factors=[float(f) for f in self.factors], texture_size=self.texture_size or 0)
        for key in ("spiral_length", "dilation"):  # one value for every level, written once or per level
            value = d["hierarchy"][key]
            if isinstance(value, list) and value and all(v == value[0] for v in value):
                d["hierarchy"][key] = value[0]
        return d

    def replace(self, **changes: Mapping[str, Any]) -> "TrainConfig":
        """A validated copy with some keys changed: ``cfg.replace(training={"epochs": 5})``."""
        merged = self.to_dict()
        _reject_unknown(changes, _SECTIONS, None, self.source)
        for section, values in changes.items():
            if not isinstance(values, Mapping):
                raise _error(self.source, section, f"expected a mapping of keys, got {_kind(values)}")
            merged[section].update(values)
        return TrainConfig.from_dict(merged, self.source)

    # ------------------------------------------------------------------ checks
    def validate(self) -> "TrainConfig":
        """Range and consistency checks (run by :meth:`from_dict`)."""
        w = self.source
        t, h, d, m, tr = self.template, self.hierarchy, self.data, self.model, self.training
        _positive(w, "template.vertices", t.vertices)
        if t.kind != "file":
            from ..mesh.templates import MAX_VERTICES, MIN_VERTICES

            if not MIN_VERTICES <= t.vertices <= MAX_VERTICES:
                raise _error(w, "template.vertices", f"expected an int in [{MIN_VERTICES}, {MAX_VERTICES}] (the vertex "
                                                     f"count of the built-in {t.kind} template), got {t.vertices}")
        _non_negative(w, "template.seed", t.seed)
        if t.kind == "file" and not t.path:
            raise _error(w, "template.path", "expected a mesh file path when template.kind is 'file', got none")
        if t.kind != "file" and t.path is not None:
            raise _error(w, "template.path", f"expected null unless template.kind is 'file', got {t.path!r} "
                                             f"with kind {t.kind!r}")
        if h.path is not None:
            if not str(h.path).strip():
                raise _error(w, "hierarchy.path", f"expected a saved hierarchy (.npz) or null, got {h.path!r}")
            if h.factors is None:  # the decoders' levels are checked against them before any work
                raise _error(w, "hierarchy.factors", "expected the factors hierarchy.path was built with (its "
                                                     "number of levels decides the model's), got none")
            if h.texture_size is not None or h.allow_uv_overlap:
                key = "hierarchy.texture_size" if h.texture_size is not None else "hierarchy.allow_uv_overlap"
                raise _error(w, key, "expected none with hierarchy.path, whose texel map (if any) comes with it")
        if h.factors is not None:
            if not h.factors:
                raise _error(w, "hierarchy.factors", "expected at least one down-sampling factor, got []")
            for i, f in enumerate(h.factors):
                if not f > 1:
                    raise _error(w, f"hierarchy.factors[{i}]", f"expected a number > 1, got {f}")
        for key in ("spiral_length", "dilation"):
            for i, v in enumerate(_as_list(getattr(h, key))):
                _positive(w, f"hierarchy.{key}" + (f"[{i}]" if isinstance(getattr(h, key), list) else ""), v)
        if isinstance(h.cache_dir, str) and not h.cache_dir.strip():  # Path("") is the working folder
            raise _error(w, "hierarchy.cache_dir", f"expected true, false or a folder, got {h.cache_dir!r}")
        if h.texture_size is not None and h.texture_size < 0:
            raise _error(w, "hierarchy.texture_size", f"expected null, 0 (no texel map) or a size > 0, got {h.texture_size}")
        _positive(w, "data.n", d.n)
        _non_negative(w, "data.seed", d.seed)
        _non_negative(w, "data.generator_seed", d.generator_seed)
        if not 0.0 <= d.test_fraction < 1.0:
            raise _error(w, "data.test_fraction", f"expected a number in [0, 1), got {d.test_fraction}")
        if not (d.norm_eps > 0 and math.isfinite(d.norm_eps)):
            raise _error(w, "data.norm_eps", f"expected a positive number, got {d.norm_eps}")
        if d.source == "folder":
            if not d.root:
                raise _error(w, "data.root", "expected the folder of registered meshes when data.source is 'folder', got none")
            if not any(p.strip() for p in d.pattern.split("|")):
                raise _error(w, "data.pattern", f"expected glob patterns separated by '|', got {d.pattern!r}")
            if d.split != "interpolation":
                raise _error(w, "data.split", "expected 'interpolation' for a folder of meshes (the extrapolation "
                                              f"split needs the synthetic faces' parameters), got {d.split!r}")
            if d.scale and not d.align:
                raise _error(w, "data.scale", "expected data.align: true with it (the scale is fitted with the "
                                              "rigid alignment), got align false")
        else:
            from ..data.synthetic import PARAM_NAMES

            if d.key not in PARAM_NAMES:
                raise _error(w, "data.key", f"expected a synthetic face parameter, one of {list(PARAM_NAMES)}, got {d.key!r}")
            if d.root is not None:
                raise _error(w, "data.root", f"expected null unless data.source is 'folder', got {d.root!r}")
        if m.preset is not None:
            from ..nn.presets import PRESETS

            if m.preset not in PRESETS:
                raise _error(w, "model.preset", f"expected null or one of {sorted(PRESETS)}, got {m.preset!r}")
            preset_decoder = _PRESET_DECODERS[PRESETS[m.preset]["cls"]]
            if m.decoder is not None and m.decoder != preset_decoder:
                raise _error(w, "model.decoder", f"preset {m.preset!r} is a {preset_decoder!r} decoder, got "
                                                 f"decoder {m.decoder!r}; drop one of the two keys")
        if m.latent_size is not None:
            _positive(w, "model.latent_size", m.latent_size)
        if m.channels is not None:
            if not m.channels:
                raise _error(w, "model.channels", "expected at least one channel width, got []")
            for i, c in enumerate(m.channels):
                _positive(w, f"model.channels[{i}]", c)
        if m.K is not None:
            _positive(w, "model.K", m.K)
        from ..nn.decoders import ACTIVATIONS

        if m.activation.lower() not in ACTIVATIONS:
            raise _error(w, "model.activation", f"expected one of {sorted(ACTIVATIONS)}, got {m.activation!r}")
        levels = len(self.factors)
        channels = self.channels
        if len(channels) > levels:
            raise _error(w, "model.channels", f"expected at most {levels} entries (one per down-sampling factor, "
                                              f"hierarchy.factors = [{', '.join(f'{float(f):g}' for f in self.factors)}]), got "
                                              f"{len(channels)}")
        for key in ("spiral_length", "dilation"):
            value = getattr(h, key)
            if isinstance(value, list) and len(value) != levels + 1:
                raise _error(w, f"hierarchy.{key}", f"expected one int or {levels + 1} (len(factors) + 1), "
                                                    f"got {len(value)}")
        _positive(w, "training.epochs", tr.epochs)
        _positive(w, "training.batch_size", tr.batch_size)
        _positive(w, "training.decay_step", tr.decay_step)
        _positive(w, "training.checkpoint_every", tr.checkpoint_every)
        _non_negative(w, "training.validate_every", tr.validate_every)
        _non_negative(w, "training.seed", tr.seed)
        if tr.seed > _MAX_TORCH_SEED:
            raise _error(w, "training.seed", f"expected an int in [0, {_MAX_TORCH_SEED}] (torch's seeds are 64-bit), "
                                             f"got {tr.seed}")
        if not (tr.lr > 0 and math.isfinite(tr.lr)):
            raise _error(w, "training.lr", f"expected a positive number, got {tr.lr}")
        if not 0.0 < tr.lr_decay <= 1.0:
            raise _error(w, "training.lr_decay", f"expected a number in (0, 1], got {tr.lr_decay}")
        if not (tr.weight_decay >= 0 and math.isfinite(tr.weight_decay)):
            raise _error(w, "training.weight_decay", f"expected a number >= 0, got {tr.weight_decay}")
        if not (tr.color_weight >= 0 and math.isfinite(tr.color_weight)):
            raise _error(w, "training.color_weight", f"expected a number >= 0, got {tr.color_weight}")
        from .._checks import check_device

        try:  # the name only: a run trained on CUDA still loads on a machine without it
            check_device(tr.device, "training.device", available=False)
        except ValueError as exc:
            raise _error(w, None, str(exc)) from None
        return self

    # ----------------------------------------------------- resolved values
    @property
    def preset(self) -> dict[str, Any]:
        """The preset's entries (empty without a preset)."""
        if self.model.preset is None:
            return {}
        from ..nn.presets import PRESETS

        return dict(PRESETS[self.model.preset])

    @property
    def decoder_kind(self) -> str:
        """``"spiral"``, ``"cheb"`` or ``"pyg"``."""
        if self.model.decoder is not None:
            return self.model.decoder
        preset = self.preset
        return _PRESET_DECODERS[preset["cls"]] if preset else "spiral"

    @property
    def encoder_kind(self) -> str:
        """``"spiral"``, ``"cheb"`` or ``"pyg"`` (with ``model.conv``, ``conv_kwargs`` and ``pseudo``).

        A PyG decoder is paired with a spiral encoder unless set, as runs trained before PyG encoders were."""
        if self.model.encoder is not None:
            return self.model.encoder
        return "spiral" if self.decoder_kind == "pyg" else self.decoder_kind

    @property
    def latent_size(self) -> int:
        if self.model.latent_size is not None:
            return int(self.model.latent_size)
        return int(self.preset.get("latent_size", 8 if self.decoder_kind == "cheb" else 16))

    @property
    def channels(self) -> list[int]:
        if self.model.channels is not None:
            return [int(c) for c in self.model.channels]
        default = (16, 16, 16, 32) if self.decoder_kind == "cheb" else (32, 32, 32, 64)
        return [int(c) for c in self.preset.get("channels", default)]

    @property
    def K(self) -> int:
        return int(self.model.K) if self.model.K is not None else int(self.preset.get("K", 6))

    @property
    def factors(self) -> list[float]:
        if self.hierarchy.factors is not None:
            return list(self.hierarchy.factors)
        return list(self.preset.get("factors", (4, 4, 4, 4)))

    @property
    def texture_size(self) -> int | None:
        """The texel map size to build, or ``None``."""
        size = self.hierarchy.texture_size
        if size is None:
            return 256 if self.model.joint else None
        return None if size == 0 else int(size)

    @property
    def in_channels(self) -> int:
        """3 (xyz) or 6 (xyz + rgb for joint models)."""
        return 6 if self.model.joint else 3


_PRESET_DECODERS = {"SpiralDecoder": "spiral", "ChebDecoder": "cheb"}

#: The largest seed ``torch.manual_seed`` takes (a larger one failed with 'Overflow when unpacking long long').
_MAX_TORCH_SEED = 2**64 - 1


# ------------------------------------------------------------------------ files
def load_config(path: str | os.PathLike) -> TrainConfig:
    """Read and validate a YAML (``.yaml``/``.yml``) or JSON (``.json``) config file.

    Other extensions are read as YAML (a superset of JSON).

    Raises:
        TrainConfigError: unreadable file, syntax error (with the line), a key given twice in one
            mapping (YAML and JSON would keep the last silently) or invalid config; the message names the file.
    """
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8-sig") as handle:  # a byte-order mark (Windows editors) is no text
            text = handle.read()
    except OSError as exc:
        raise unreadable(path, "the config file", exc, TrainConfigError, TrainConfigNotFoundError) from None
    except UnicodeDecodeError as exc:
        raise TrainConfigError(f"{path}: expected UTF-8 text, found byte 0x{exc.object[exc.start]:02x} at offset "
                               f"{exc.start}") from None
    if path.lower().endswith(".json"):
        try:
            data = json.loads(text, object_pairs_hook=_unique_json_object)
        except json.JSONDecodeError as exc:
            raise TrainConfigError(f"{path}, line {exc.lineno}: not valid JSON ({exc.msg})") from None
        except _DuplicateKey as exc:
            raise TrainConfigError(f"{path}: not valid JSON ({exc})") from None
    else:
        import yaml

        try:
            data = yaml.load(text, Loader=_unique_key_loader())  # a SafeLoader: no Python objects
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            line = f", line {mark.line + 1}" if mark is not None else ""
            problem = getattr(exc, "problem", None) or str(exc)
            raise TrainConfigError(f"{path}{line}: not valid YAML ({problem})") from None
    if data is None:  # an empty file (or only comments): most likely not the file meant
        raise TrainConfigError(f"{path}: expected a mapping of settings, got an empty file (write {{}} to train "
                               "with every default)")
    return TrainConfig.from_dict(data, source=path)


class _DuplicateKey(ValueError):
    """A key given twice in one mapping of a config file (YAML and JSON keep the last silently)."""


def _unique_json_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``json.loads``' ``object_pairs_hook``: the object, or :class:`_DuplicateKey` for a repeated key."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(f"duplicate key {key!r}: expected each key once in an object, found it twice")
        out[key] = value
    return out


@functools.lru_cache(maxsize=None)
def _unique_key_loader() -> type:
    """A ``yaml.SafeLoader`` that refuses a key given twice in one mapping, naming both lines
    (merge keys ``<<`` may still be overridden, as YAML defines)."""
    import yaml

    class UniqueKeyLoader(yaml.SafeLoader):
        def construct_mapping(self, node, deep=False):
            if isinstance(node, yaml.MappingNode):
                first: dict[Any, int] = {}
                for key_node, _ in node.value:
                    if key_node.tag == "tag:yaml.org,2002:merge":
                        continue
                    key = self.construct_object(key_node, deep=deep)
                    try:
                        again = key in first
                    except TypeError:  # an unhashable key: SafeLoader names it
                        continue
                    if again:
                        raise yaml.constructor.ConstructorError(
                            None, None, f"duplicate key {key!r}: expected each key once in a mapping, found it "
                                        f"on line {first[key]} and here", key_node.start_mark)
                    first[key] = key_node.start_mark.line + 1
            return super().construct_mapping(node, deep=deep)

    return UniqueKeyLoader


def save_config(config: TrainConfig, path: str | os.PathLike) -> None:
    """Write ``config`` as YAML (``.yaml``/``.yml``) or JSON (any other extension), atomically."""
    from .._atomic import atomic_write

    path = os.fspath(path)
    data = config.to_dict()
    if path.lower().endswith((".yaml", ".yml")):
        import yaml

        text = yaml.safe_dump(data, sort_keys=False)
    else:
        text = json.dumps(data, indent=2) + "\n"
    with atomic_write(path, "w") as handle:
        handle.write(text)


def config_differences(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[str]:
    """Dotted keys whose values differ between two :meth:`TrainConfig.to_dict` dicts."""
    keys = []
    for section in sorted(set(a) | set(b)):
        sa, sb = a.get(section) or {}, b.get(section) or {}
        for key in sorted(set(sa) | set(sb)):
            if sa.get(key, _MISSING) != sb.get(key, _MISSING):
                keys.append(f"{section}.{key}")
    return keys


_MISSING = object()


# ---------------------------------------------------------------- validation
def _error(where: str | None, key: str | None, message: str) -> TrainConfigError:
    prefix = f"{where}: " if where else "config: "
    return TrainConfigError(prefix + (f"{key}: " if key else "") + message)


def _kind(value: Any) -> str:
    return f"{value!r} ({type(value).__name__})"


def _reject_unknown(values: Mapping[str, Any], allowed, prefix: str | None, where: str | None) -> None:
    for key in values:
        if not isinstance(key, str) or key not in allowed:
            dotted = f"{prefix}.{key}" if prefix else str(key)
            close = difflib.get_close_matches(str(key), list(allowed), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise _error(where, None, f"unknown key {dotted!r}{hint}; expected one of {sorted(allowed)}")


def _build_section(cls: type, values: Mapping[str, Any], name: str, where: str | None):
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    _reject_unknown(values, names, name, where)
    kwargs = {key: _coerce(value, hints[key], f"{name}.{key}", where) for key, value in values.items()}
    return cls(**kwargs)


def _describe(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if hint is type(None):
        return "null"
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(hint))
    if origin in (Union, types.UnionType):  # "true, false or a string", not "true or false or a string"
        parts = ["true, false" if a is bool else _describe(a) for a in typing.get_args(hint)]
        return ", ".join(parts[:-1]) + " or " + parts[-1]
    if origin is list:
        (item,) = typing.get_args(hint)
        plural = {int: "ints", float: "numbers", bool: "true or false values", str: "strings"}
        return f"a list of {plural.get(item) or _describe(item)}"
    if origin is dict:
        return "a mapping"
    return {int: "an int", float: "a number", bool: "true or false", str: "a string"}.get(hint, str(hint))


def _coerce(value: Any, hint: Any, key: str, where: str | None) -> Any:
    """``value`` checked against the type ``hint`` (ints accepted as floats, nothing else converted)."""
    ok, out = _try(value, hint)
    if not ok:
        raise _error(where, key, f"expected {_describe(hint)}, got {_kind(value)}")
    return out


def _try(value: Any, hint: Any) -> tuple[bool, Any]:
    origin = typing.get_origin(hint)
    if hint is type(None):
        return value is None, None
    if origin in (Union, types.UnionType):
        for arg in typing.get_args(hint):
            ok, out = _try(value, arg)
            if ok:
                return True, out
        return False, None
    if origin is Literal:
        return (isinstance(value, str) and value in typing.get_args(hint)), value
    if origin is list:
        (item,) = typing.get_args(hint)
        if not isinstance(value, (list, tuple)):
            return False, None
        out = []
        for v in value:
            ok, o = _try(v, item)
            if not ok:
                return False, None
            out.append(o)
        return True, out
    if origin is dict:
        if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
            return False, None
        try:
            json.dumps(dict(value), allow_nan=False)
        except (TypeError, ValueError):
            return False, None
        return True, dict(value)
    if hint is bool:
        return isinstance(value, bool), value
    if hint is int:
        return (isinstance(value, numbers.Integral) and not isinstance(value, bool)), (
            int(value) if isinstance(value, numbers.Integral) else None)
    if hint is float:
        if isinstance(value, str):  # YAML 1.1 reads "1e-3" (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                return False, None
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            return False, None
        value = float(value)
        return math.isfinite(value), value
    if hint is str:
        return isinstance(value, str), value
    if hint is Any:
        return True, value
    raise TypeError(f"unsupported config type {hint!r}")  # pragma: no cover - a bug in this module


def _as_list(value) -> list:
    return list(value) if isinstance(value, list) else [value]


def _positive(where, key: str, value) -> None:
    if value < 1:
        raise _error(where, key, f"expected an int >= 1, got {value}")


def _non_negative(where, key: str, value) -> None:
    if value < 0:
        raise _error(where, key, f"expected an int >= 0, got {value}")
