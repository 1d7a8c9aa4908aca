r"""Mesh decoders: a latent code to vertices (and a UV texture).

Graph decoders (:class:`SpiralDecoder`, :class:`ChebDecoder`,
:class:`PyGDecoder`) share one architecture, the decoder of SpiralNet++
(Gong et al., "SpiralNet++: A Fast and Highly Efficient Mesh Convolution
Operator", ICCVW 2019) and of COMA (Ranjan et al., "Generating 3D faces using
Convolutional Mesh Autoencoders", ECCV 2018), and differ only in the
convolution:

.. code-block:: text

    z (B, Z) --FC--> (B, V_L, c_{L-1})
      for l = L-1, ..., 0:   up-sample to level l -> conv (c_{l+1} or c_{L-1} -> c_l) -> activation
      output conv at level 0 (c_0 -> out_channels), no activation
      y * std + mean  (per-vertex normalisation, buffers)

With ``channels = (32, 32, 32, 64)`` on a 4-level hierarchy this is
``FC(Z, V_4 * 64)``, up to level 3 + conv 64->64, up to 2 + conv 64->32, up to 1 +
conv 32->32, up to 0 + conv 32->32, output conv 32->3: the mirror of the encoder
in :mod:`mesh_decoder.nn.encoders`.

Texture: :class:`JointDecoder` decodes shape and a UV texture from one latent,
either through per-vertex colours written into the UV map
(``texture_branch="mesh"``, the coloured-mesh decoder of Zhou et al.,
"Dense 3D Face Decoding over 2500FPS: Joint Texture & Shape Convolutional Mesh
Decoders", CVPR 2019) or through a 2D convolutional branch
(``texture_branch="cnn"``, :class:`UVTextureDecoder`, in the style of the
UV-space nonlinear 3DMM of Tran & Liu, CVPR 2018). Both classes live here, next
to the graph decoders they wrap; the fixed UV operators they use
(:class:`~mesh_decoder.nn.texture.TexelGather`,
:func:`~mesh_decoder.nn.texture.sample_uv`) live in :mod:`mesh_decoder.nn.texture`.

Every decoder has ``config() -> dict`` (JSON-able, with ``"class"``) and
``from_config(config, hierarchy)``; weights and normalisation live in the
``state_dict``, and so does the hierarchy's graph (spiral, sampling and
Laplacian buffers): loading a state dict saved on another hierarchy of the same
sizes warns, and the module then runs on the saved graph.
:func:`decoder_from_config` rebuilds any of them by class name.
"""

from __future__ import annotations

import inspect
import math
import warnings
from typing import Any, Callable, Mapping, NamedTuple, Sequence

import numpy as np
import torch
from torch import nn

from .._checks import check_bool, check_tensor, int_value, is_integer, positive_int
from ..errors import HierarchyError
from ..hierarchy.container import MeshHierarchy, TexelMap
from .cheb_conv import ChebConv, bag_device
from .graph import (after_load, fast_paths_enabled, inference_fast_path, mesh_edge_index, takes_dtype,
                    write_buffer)
from .pool import UpSample
from .pyg_conv import PyGConv, pseudo_coordinates
from .spiral_conv import SpiralConv, _version, weight_blocks_scope
from .texture import TexelGather
from .up_spiral_conv import UpSpiralConv

__all__ = [
    "ACTIVATIONS",
    "GraphDecoder",
    "SpiralDecoder",
    "ChebDecoder",
    "PyGDecoder",
    "UVTextureDecoder",
    "JointDecoder",
    "JointOutput",
    "decoder_from_config",
]

# --------------------------------------------------------------------------- helpers

#: Activation names accepted by the decoders and encoders.
ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "elu": nn.ELU,
    "relu": nn.ReLU,
    "leaky_relu": nn.LeakyReLU,
    "silu": nn.SiLU,
    "gelu": nn.GELU,
    "tanh": nn.Tanh,
    "softplus": nn.Softplus,
}


#: Bytes of level-0 features per sample-chunk of a CPU inference decode (four tensors
#: of the widest level-0 width per sample): small enough that the chunk's
#: intermediates stay in cache, large enough to keep the matrix products efficient
#: (measured on 2 cores: chunks of 4-8 samples of the 5,023-vertex preset were fastest).
DECODE_CHUNK_BYTES = 32 << 20


def _batched_latent(z: Any, latent_size: int, weight: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """``z`` checked against a decoder's latent size and first weight (dtype, device),
    as ``(B, Z)``, and whether it came unbatched: ``(Z,)`` or ``(B, Z)`` -> ``(B, Z)``."""
    if not isinstance(z, torch.Tensor):
        raise TypeError(f"z: expected a torch.Tensor, got {type(z).__name__}")
    Z = latent_size
    if z.dim() not in (1, 2) or z.shape[-1] != Z:
        raise ValueError(f"z: expected shape (B, {Z}) or ({Z},), got {tuple(z.shape)}")
    if not takes_dtype(z, weight.dtype):  # under autocast an encoder or a user's layer before gives bf16
        raise TypeError(f"z: expected dtype {weight.dtype} (the decoder's), got {z.dtype}")
    if z.device != weight.device:
        raise ValueError(f"z: expected a tensor on {weight.device} (the decoder's), got one on {z.device}")
    unbatched = z.dim() == 1
    return (z.unsqueeze(0) if unbatched else z), unbatched


@torch.compiler.nested_compile_region
def _decode_chunk(decoder: "GraphDecoder", zb: torch.Tensor) -> torch.Tensor:
    """One chunk of a chunked CPU decode: ``decoder._decode(zb)``.

    Under ``torch.compile`` a nested compile region: the network is traced and compiled
    once per chunk shape and every chunk of that shape calls it, where an inlined loop
    would copy the network into the graph once per chunk. Measured on 2 cores, cold
    compile and compiled meshes/s against a loop capped at 8 inlined chunks:
    spiralnet++-coma at batch 256 (43 chunks) 8 s, 961/s (was 6 s, 740/s); coma at
    batch 256 (5 chunks) 19 s, 1,501/s (was 32 s, 1,130/s). A batch that fits one chunk
    calls ``_decode`` directly (the region's call cost more at batch 1).
    """
    return decoder._decode(zb)


#: In-place versions used when no gradient is recorded, so inference keeps one activation
#: tensor alive per level instead of two (same defaults as the modules above).
_INPLACE_ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "elu": nn.functional.elu_,
    "relu": nn.functional.relu_,
    "leaky_relu": nn.functional.leaky_relu_,
}


#: The settings (public attributes) of each activation as :func:`make_activation` makes it.
_DEFAULT_ACTIVATION_SETTINGS = {
    name: {k: v for k, v in vars(cls()).items() if not k.startswith("_") and k != "training"}
    for name, cls in ACTIVATIONS.items()
}


def _is_stock_activation(module: nn.Module, name: str) -> bool:
    """Whether ``module`` is what ``make_activation(name)`` makes, class and settings: only then may a fast
    path apply the activation by its name (a user's ``decoder.act = nn.Mish()`` is run as a module)."""
    return type(module) is ACTIVATIONS.get(name) and all(
        getattr(module, k, None) == v for k, v in _DEFAULT_ACTIVATION_SETTINGS[name].items())


def activation_name(name: Any) -> str:
    """``name`` checked against :data:`ACTIVATIONS`, lower-cased."""
    if not isinstance(name, str):
        raise TypeError(
            f"activation: expected a name (str) in {sorted(ACTIVATIONS)}, got {type(name).__name__} {name!r}"
        )
    key = name.lower()
    if key not in ACTIVATIONS:
        raise ValueError(f"activation: expected one of {sorted(ACTIVATIONS)}, got {name!r}")
    return key


def make_activation(name: str) -> nn.Module:
    """A fresh activation module from its name in :data:`ACTIVATIONS`."""
    return ACTIVATIONS[activation_name(name)]()


def _check_channels(channels: Sequence[int]) -> tuple[int, ...]:
    if isinstance(channels, (str, bytes)) or not isinstance(channels, Sequence):
        raise TypeError(f"channels: expected a non-empty sequence of ints, got {type(channels).__name__} {channels!r}")
    if len(channels) == 0:
        raise ValueError(f"channels: expected a non-empty sequence of ints, got {channels!r}")
    out = []
    for i, c in enumerate(channels):
        c = int_value(c, f"channels[{i}]", "a positive int")
        if c < 1:
            raise ValueError(f"channels: expected positive ints, got {list(channels)!r}")
        out.append(c)
    return tuple(out)


def _check_levels(hierarchy: MeshHierarchy, num_convs: int) -> None:
    if not isinstance(hierarchy, MeshHierarchy):
        raise TypeError(f"hierarchy: expected a MeshHierarchy, got {type(hierarchy).__name__}")
    if hierarchy.num_levels < num_convs + 1:
        raise HierarchyError(
            f"hierarchy: expected at least {num_convs + 1} levels for {num_convs} channel entries, "
            f"got {hierarchy.num_levels} (sizes {hierarchy.sizes})"
        )


def _check_level_sizes(num_vertices: Sequence[int], num_convs: int) -> tuple[int, ...]:
    """``(V_0, ..., V_L)`` as ints, one more level size than ``num_convs`` channel entries."""
    sizes = tuple(positive_int(v, "num_vertices") for v in num_vertices)
    if len(sizes) != num_convs + 1:
        raise ValueError(f"num_vertices: expected {num_convs + 1} level sizes for {num_convs} channel entries, "
                         f"got {len(sizes)}")
    return sizes


def _check_level_index(index: Any, name: str, shape: tuple[int, ...], num_in: int, level: int) -> None:
    """An int64 index tensor of ``shape`` into level ``level`` (``num_in`` vertices); errors name ``name``."""
    check_tensor(index, name)
    if tuple(index.shape) != shape:
        raise ValueError(f"{name}: expected shape {shape}, got {tuple(index.shape)}")
    check_tensor(index, name, dtype=torch.int64)
    if index.numel():
        lo, hi = int(index.min()), int(index.max())
        if lo < 0 or hi >= num_in:
            raise ValueError(f"{name}: expected indices in [0, {num_in}) (level {level} size), got range [{lo}, {hi}]")


def _per_level(value: Any, num: int, name: str, most: int) -> list[Any]:
    """An int (or None) broadcast to ``num`` levels, or a sequence of ``num`` to ``most`` values (one per
    hierarchy level, say) of which the first ``num`` are returned; every given value is checked."""
    if value is None:
        return [None] * num
    if isinstance(value, (int, np.integer)):  # a bool too: refused, not taken as length 1
        return [positive_int(value, name)] * num
    count = f"{num}" if num == most else f"{num} to {most}"
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise TypeError(f"{name}: expected an int or a sequence of {count} values, got {type(value).__name__} "
                        f"{value!r}")
    if not num <= len(value) <= most:
        raise ValueError(f"{name}: expected an int or a sequence of {count} values, got {value!r}")
    return [None if v is None else positive_int(v, f"{name}[{i}]") for i, v in enumerate(value)][:num]


def _level_spirals(hierarchy: MeshHierarchy, spiral_length: Any, num: int) -> tuple[list[torch.Tensor], list[int]]:
    """Spirals of levels ``0..num-1``, truncated to ``spiral_length`` where asked.

    Truncation keeps the first ``S`` entries of each spiral; it is only valid
    for undilated spirals (dilation 1), where the first ``S`` entries of a
    longer spiral are exactly the spiral of length ``S``.
    """
    lengths = _per_level(spiral_length, num, "spiral_length", max(num, hierarchy.num_levels))
    spirals, dilations = [], []
    for l, want in enumerate(lengths):
        lvl = hierarchy.levels[l]
        have = int(lvl.spirals.shape[1])
        if want is None or want == have:
            spirals.append(lvl.spirals)
        else:
            if want > have:
                raise ValueError(
                    f"spiral_length[{l}]: expected at most the hierarchy's spiral length {have} at level {l}, "
                    f"got {want} (build the hierarchy with longer spirals)"
                )
            if int(lvl.dilation) != 1:
                raise ValueError(
                    f"spiral_length[{l}]: truncating a spiral needs dilation 1, but level {l} has dilation "
                    f"{lvl.dilation}; build the hierarchy with spiral_lengths={want} instead"
                )
            spirals.append(lvl.spirals[:, :want].contiguous())  # (V_l, want)
        dilations.append(int(lvl.dilation))
    return spirals, dilations


def _level_laplacians(hierarchy: MeshHierarchy, num: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """The Laplacians of levels ``0..num-1``: ``(index, weight)`` lists, ``(2, E_l)`` and ``(E_l,)``."""
    levels = hierarchy.levels[:num]
    return [lvl.laplacian_index for lvl in levels], [lvl.laplacian_weight for lvl in levels]


def _as_float_tensor(value: Any, name: str) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        t = value.detach()
    elif value is None:  # np.asarray(None, dtype=float) is NaN, which would be reported as a non-finite value
        raise TypeError(f"{name}: expected a tensor, array or number, got None")
    else:
        try:
            t = torch.as_tensor(np.asarray(value, dtype=np.float64))
        except (TypeError, ValueError) as exc:
            raise TypeError(f"{name}: expected a tensor or array of numbers, got {type(value).__name__}") from exc
    if not (t.is_floating_point() or t.dtype in (torch.int32, torch.int64)):
        raise TypeError(f"{name}: expected a floating tensor, got dtype {t.dtype}")
    return t


def _check_config_sizes(config: Mapping[str, Any], hierarchy: MeshHierarchy, num_convs: int) -> None:
    """Raise :class:`HierarchyError` when ``hierarchy`` is not the one ``config`` was made on."""
    _check_levels(hierarchy, num_convs)
    want = config.get("num_vertices")
    have = hierarchy.sizes[: num_convs + 1]
    if want is not None and (isinstance(want, (str, bytes)) or not isinstance(want, Sequence)):
        raise TypeError(f"config: expected 'num_vertices' to be a list of level sizes, got {want!r}")
    if want is not None and list(want) != have:
        raise HierarchyError(f"hierarchy: expected level sizes {list(want)} (from the config), got {have}")
    want_hash = config.get("template_hash")
    have_hash = hierarchy.template_hash
    if want_hash is not None and have_hash is not None and want_hash != have_hash:
        raise HierarchyError(
            f"hierarchy: expected template hash {want_hash} (from the config), got {have_hash}"
        )


def _built_from_config(cls: type, config: Mapping[str, Any], hierarchy: MeshHierarchy,
                       kwargs: dict[str, Any]):
    """``cls.from_hierarchy(hierarchy, **kwargs)``, with ``hierarchy`` checked against ``config``'s level sizes
    and template hash: before building when the config gives its channels, else after (the defaults of
    whatever ``from_hierarchy`` a subclass has)."""
    if "channels" in kwargs:
        _check_config_sizes(config, hierarchy, len(_check_channels(kwargs["channels"])))
        return cls.from_hierarchy(hierarchy, **kwargs)
    model = cls.from_hierarchy(hierarchy, **kwargs)
    _check_config_sizes(config, hierarchy, len(model.channels))
    return model


def _check_config_keys(kwargs: Mapping[str, Any], cls: type, takes: Callable[..., Any]) -> None:
    """Refuse (``ValueError``) a config key of ``cls`` that ``takes`` (what the config is passed to) does not
    take, listing those it takes."""
    params = inspect.signature(takes).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    known = sorted(n for n, p in params.items() if n != "hierarchy" and p.kind is not inspect.Parameter.VAR_POSITIONAL)
    unknown = sorted(set(kwargs) - set(known))
    if unknown:
        raise ValueError(f"config: unknown key{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))} "
                         f"for {cls.__name__}; expected some of {known} (and 'class', 'num_vertices', "
                         "'template_hash')")


def _split_config(config: Mapping[str, Any], cls: type, takes: Callable[..., Any] | None = None) -> dict[str, Any]:
    """``config``'s constructor arguments for ``cls``, checked against the keywords of ``takes`` (what they are
    passed to; default ``cls.from_hierarchy``, or ``cls`` itself without one)."""
    if not isinstance(config, Mapping):
        raise TypeError(f"config: expected a dict, got {type(config).__name__}")
    name = config.get("class")
    if name != cls.__name__:
        raise ValueError(f"config: expected class {cls.__name__!r}, got {name!r}")
    kwargs = {k: v for k, v in config.items() if k not in ("class", "num_vertices", "template_hash")}
    _check_config_keys(kwargs, cls, takes or getattr(cls, "from_hierarchy", cls))
    return kwargs


# ---------------------------------------------------------------------- graph decoders


class HierarchyModel:
    """Config round trip shared by the graph decoders and encoders.

    Subclasses define ``_base_config()`` (JSON-able constructor arguments) and
    ``from_hierarchy(hierarchy, **config)``; :meth:`from_config` rebuilds a module on the
    same hierarchy, checking its level sizes and template hash.
    """

    template_hash: str | None

    def config(self) -> dict[str, Any]:
        """JSON-able constructor arguments; rebuild with ``from_config(config, hierarchy)``."""
        return self._base_config()

    @classmethod
    def from_config(cls, config: Mapping[str, Any], hierarchy: MeshHierarchy):
        """Rebuild from :meth:`config` on the same hierarchy (sizes and template hash are checked)."""
        return _built_from_config(cls, config, hierarchy, _split_config(config, cls))

    @classmethod
    def from_hierarchy(cls, hierarchy: MeshHierarchy, **config: Any):  # pragma: no cover
        raise NotImplementedError

    def _remember_hierarchy(self, hierarchy: MeshHierarchy):
        self.template_hash = hierarchy.template_hash
        return self

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        """As :class:`torch.nn.Module`'s, with a warning when the state dict's graph (its integer buffers:
        spirals, sampling and Laplacian indices) differs from this module's: saved on another hierarchy of
        the same sizes, whose graph the module then runs on. A load torch will refuse for a tensor of another
        shape does not warn (torch passes ``strict=True`` here whatever the caller's, so a missing key,
        refused only under the caller's ``strict``, still warns)."""
        own = self.state_dict(keep_vars=True)
        if any(isinstance(saved := state_dict.get(prefix + name), torch.Tensor) and saved.shape != tensor.shape
               for name, tensor in own.items()):
            super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                          error_msgs)
            return
        differ = []
        for name, buffer in self.named_buffers():  # (this module's and its children's)
            saved = state_dict.get(prefix + name)
            if (isinstance(saved, torch.Tensor) and not buffer.is_floating_point()
                    and saved.shape == buffer.shape and not torch.equal(saved.to(buffer.device), buffer)):
                differ.append(name)
        if differ:
            warnings.warn(
                f"load_state_dict: the state dict's graph differs from this {type(self).__name__}'s in "
                f"{len(differ)} index buffer{'s' if len(differ) > 1 else ''} ({', '.join(differ[:3])}"
                f"{', ...' if len(differ) > 3 else ''}): it was saved on another hierarchy of the same sizes, "
                "whose graph the module now runs on while template_hash still names its own; build the module "
                "on the saved one's hierarchy (load_model checks it)",
                RuntimeWarning, stacklevel=3,
            )
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)


class _SpiralLevels:
    """The per-level :class:`~mesh_decoder.nn.SpiralConv` of a graph decoder or encoder.

    A mixin before :class:`GraphDecoder` or :class:`~mesh_decoder.nn.GraphEncoder`:
    it checks the spirals against the level sizes and supplies ``_make_conv``.
    """

    channels: tuple[int, ...]
    num_vertices: tuple[int, ...]

    def _build_spiral_convs(self, spirals: Sequence[torch.Tensor], dilations: Sequence[int] | None) -> None:
        L = len(self.channels)
        if len(spirals) != L:
            raise ValueError(f"spirals: expected {L} tensors (levels 0..{L - 1}), got {len(spirals)}")
        for l in range(L):
            if spirals[l].dim() != 2 or spirals[l].shape[0] != self.num_vertices[l]:
                raise ValueError(
                    f"spirals[{l}]: expected shape ({self.num_vertices[l]}, S), got {tuple(spirals[l].shape)}"
                )
        self.dilations = tuple(int(d) for d in (dilations if dilations is not None else [1] * L))
        if len(self.dilations) != L:
            raise ValueError(f"dilations: expected {L} ints, got {len(self.dilations)}")
        self.spiral_lengths = tuple(int(s.shape[1]) for s in spirals)
        self._spirals = list(spirals)
        self._build_convs()  # type: ignore[attr-defined]
        del self._spirals  # the convs hold the spirals as buffers

    def _make_conv(self, level: int, in_channels: int, out_channels: int) -> nn.Module:
        return SpiralConv(in_channels, out_channels, self._spirals[level], dilation=self.dilations[level])


class _ChebLevels:
    """The per-level :class:`~mesh_decoder.nn.ChebConv` of a graph decoder or encoder
    (a mixin, as :class:`_SpiralLevels`)."""

    channels: tuple[int, ...]
    num_vertices: tuple[int, ...]

    def _build_cheb_convs(self, K: int, laplacian_index: Sequence[torch.Tensor],
                          laplacian_weight: Sequence[torch.Tensor]) -> None:
        L = len(self.channels)
        self.K = positive_int(K, "K")
        if len(laplacian_index) != L or len(laplacian_weight) != L:
            raise ValueError(
                f"laplacian_index/laplacian_weight: expected {L} tensors each (levels 0..{L - 1}), "
                f"got {len(laplacian_index)} and {len(laplacian_weight)}"
            )
        self._laplacians = list(zip(laplacian_index, laplacian_weight))
        self._build_convs()  # type: ignore[attr-defined]
        del self._laplacians  # the convs hold the Laplacians as buffers

    def _make_conv(self, level: int, in_channels: int, out_channels: int) -> nn.Module:
        index, weight = self._laplacians[level]
        return ChebConv(in_channels, out_channels, self.K, index, weight, self.num_vertices[level])


def _resolve_pyg_conv(conv: Any, conv_kwargs: Mapping[str, Any] | None) -> Callable[[int, int], nn.Module]:
    if callable(conv) and not isinstance(conv, (str, type)):
        if conv_kwargs:
            raise ValueError("conv_kwargs: expected none with a conv factory function, got some")
        return conv
    if isinstance(conv, str):
        import torch_geometric.nn as pyg_nn

        conv_cls = getattr(pyg_nn, conv, None)
        if not isinstance(conv_cls, type):
            raise ValueError(f"conv: expected the name of a torch_geometric.nn conv class, got {conv!r}")
    elif isinstance(conv, type):
        conv_cls = conv
    else:
        raise TypeError(f"conv: expected a class name, a class or a factory (in, out) -> MessagePassing, got {conv!r}")
    if conv_kwargs is not None and not isinstance(conv_kwargs, Mapping):
        raise TypeError(f"conv_kwargs: expected a dict of keyword arguments for {conv_cls.__name__}, "
                        f"got {type(conv_kwargs).__name__} {conv_kwargs!r}")
    kwargs = dict(conv_kwargs or {})
    return lambda cin, cout: conv_cls(cin, cout, **kwargs)


def _pyg_conv_name(conv: Any) -> str | None:
    """The name a config stores for ``conv``: a name as given, a ``torch_geometric`` class's name, else ``None``
    (a factory function, or a class outside ``torch_geometric.nn``, which a rebuild could not find by name)."""
    if isinstance(conv, str):
        return conv
    if isinstance(conv, type) and conv.__module__.startswith("torch_geometric."):
        return conv.__name__
    return None


class _PyGLevels:
    """The per-level :class:`~mesh_decoder.nn.PyGConv` of a graph decoder or encoder (a mixin, as
    :class:`_SpiralLevels`): conv resolution, edge attributes, ``_make_conv``, the level edges of a
    hierarchy, and the config fields and ``from_config`` that a factory conv needs.

    Attributes set by :meth:`_build_pyg_convs`: ``conv_name`` (``None`` for a factory), ``conv_kwargs``,
    ``mode`` and ``pseudo``.
    """

    channels: tuple[int, ...]
    num_vertices: tuple[int, ...]

    def _build_pyg_convs(
        self,
        conv: str | type | Callable[[int, int], nn.Module],
        edge_index: Sequence[torch.Tensor],
        conv_kwargs: Mapping[str, Any] | None,
        mode: str,
        pseudo: str | None,
        level_vertices: Sequence[torch.Tensor] | None,
    ) -> None:
        L = len(self.channels)
        if len(edge_index) != L:
            raise ValueError(f"edge_index: expected {L} tensors (levels 0..{L - 1}), got {len(edge_index)}")
        self._factory = _resolve_pyg_conv(conv, conv_kwargs)
        self.conv_name: str | None = _pyg_conv_name(conv)
        self.conv_kwargs = dict(conv_kwargs or {})
        self.mode = mode
        self.pseudo = pseudo
        self._edges = list(edge_index)
        self._edge_attr: list[torch.Tensor | None] = [None] * L
        if pseudo is not None:
            if level_vertices is None or len(level_vertices) != L:
                found = "none" if level_vertices is None else f"{len(level_vertices)}"
                raise ValueError(f"level_vertices: expected {L} tensors (V_l, 3) with pseudo={pseudo!r}, got {found}")
            self._edge_attr = [pseudo_coordinates(pseudo, check_tensor(v, f"level_vertices[{l}]",
                                                                       shape=(self.num_vertices[l], 3)), e)
                               for l, (v, e) in enumerate(zip(level_vertices, self._edges))]
        self._build_convs()  # type: ignore[attr-defined]
        del self._edges, self._edge_attr, self._factory  # the convs hold the graph as buffers

    def _make_conv(self, level: int, in_channels: int, out_channels: int) -> nn.Module:
        return PyGConv(self._factory(in_channels, out_channels), self._edges[level], self.num_vertices[level],
                       mode=self.mode, edge_attr=self._edge_attr[level])

    @staticmethod
    def hierarchy_edges(hierarchy: MeshHierarchy, level: int) -> torch.Tensor:
        """Directed edges ``(2, E)`` of a level: both directions of every face edge
        (:func:`~mesh_decoder.nn.mesh_edge_index`, as :meth:`PyGConv.from_hierarchy`)."""
        lvl = hierarchy.levels[level]
        return mesh_edge_index(lvl.faces, lvl.num_vertices)  # (2, E)

    @classmethod
    def _hierarchy_graphs(cls, hierarchy: MeshHierarchy, num: int, pseudo: str | None
                          ) -> tuple[list[torch.Tensor], list[torch.Tensor] | None]:
        """Levels ``0..num-1``'s edges ``(2, E_l)`` and, with ``pseudo``, their template vertices ``(V_l, 3)``
        (the ``edge_index`` and ``level_vertices`` constructor arguments)."""
        edges = [cls.hierarchy_edges(hierarchy, l) for l in range(num)]
        return edges, None if pseudo is None else [hierarchy.levels[l].vertices for l in range(num)]

    def config(self) -> dict[str, Any]:
        """JSON-able config; ``"conv"`` is ``None`` when the conv was given as a factory function or a
        class outside ``torch_geometric.nn``."""
        base = self._base_config()  # type: ignore[attr-defined]
        return {**base, "conv": self.conv_name, "conv_kwargs": dict(self.conv_kwargs), "mode": self.mode,
                "pseudo": self.pseudo}

    @classmethod
    def from_config(
        cls,
        config: Mapping[str, Any],
        hierarchy: MeshHierarchy,
        conv: str | type | Callable[[int, int], nn.Module] | None = None,
    ):
        """Rebuild from :meth:`config`; pass ``conv`` when it was a factory function or a class outside
        ``torch_geometric.nn``."""
        kwargs = _split_config(config, cls)
        if conv is not None:
            kwargs["conv"] = conv
            if not isinstance(conv, (str, type)):
                kwargs.pop("conv_kwargs", None)
        elif kwargs.get("conv") is None:
            raise ValueError("config: the conv was a factory function or a class outside torch_geometric.nn, which "
                             "a config cannot store by name; pass conv=")
        return _built_from_config(cls, config, hierarchy, kwargs)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", conv={self.conv_name or 'factory'}"  # type: ignore[misc]


class GraphDecoder(HierarchyModel, nn.Module):
    r"""Base class of the graph decoders: FC, then [up-sample, conv, activation] per level.

    .. math::
        x_L = \mathrm{reshape}(W z + b), \qquad
        x_l = \sigma\big(\mathrm{conv}_l(U_l\, x_{l+1})\big)\ (l = L-1, \dots, 0), \qquad
        y = (\mathrm{conv}_{out}(x_0)) \odot \sigma_{data} + \mu_{data}

    where :math:`U_l` is the barycentric up-sampling from level ``l + 1`` to
    ``l`` and :math:`\mu_{data}, \sigma_{data}` are the per-vertex
    normalisation buffers :attr:`mean` and :attr:`std` (defaults 0 and 1).
    Subclasses supply the convolution through :meth:`_make_conv`.

    Args:
        latent_size: ``Z``.
        channels: ``(c_0, ..., c_{L-1})``, the feature width at each level;
            ``len(channels)`` up-sampling steps are run.
        num_vertices: ``(V_0, ..., V_L)``, the vertex count per level.
        up_index: ``L`` int64 tensors, ``up_index[l]`` ``(V_l, 3)`` into level ``l + 1``.
        up_weight: ``L`` float tensors ``(V_l, 3)``.
        out_channels: output features per vertex (default 3: xyz).
        activation: a name in :data:`ACTIVATIONS` (default ``"elu"``).
        check_finite: when ``True``, raise ``ValueError`` on a non-finite latent
            or output (default ``False``). The check reads a value back from the
            device, so it synchronises CUDA and cannot run inside CUDA graphs or
            ``torch.compile``-d regions (it breaks the graph); keep it for
            debugging and input sanitising, off in compiled or captured code.

    Shapes:
        - input: ``z`` ``(B, Z)`` or ``(Z,)``, floating, the module's dtype
        - output: ``(B, V_0, out_channels)`` or ``(V_0, out_channels)``

    The blocks are stored coarse to fine: ``ups[i]`` and ``convs[i]`` run at level
    ``L-1-i`` (the arguments above, like a hierarchy's levels, go fine to coarse).

    When no gradient is recorded (``torch.no_grad``, ``inference_mode``, or inputs and
    parameters that need none), the spiral and Chebyshev decoders run fused fast paths
    that call neither ``ups[i]`` nor ``convs[i]``, and every decoder applies its
    activation in place. Forward hooks on those submodules therefore see no call, or
    (PyG decoders) see their output activated afterwards. To read per-layer features
    with hooks, decode inside :func:`~mesh_decoder.nn.plain_formulation`, which runs
    every module as written and allocates a fresh activation.
    """

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(
        self,
        latent_size: int,
        channels: Sequence[int],
        num_vertices: Sequence[int],
        up_index: Sequence[torch.Tensor],
        up_weight: Sequence[torch.Tensor],
        out_channels: int = 3,
        activation: str = "elu",
        check_finite: bool = False,
    ) -> None:
        super().__init__()
        self.latent_size = positive_int(latent_size, "latent_size")
        self.channels = _check_channels(channels)
        self.out_channels = positive_int(out_channels, "out_channels")
        L = len(self.channels)
        sizes = _check_level_sizes(num_vertices, L)
        if len(up_index) != L or len(up_weight) != L:
            raise ValueError(
                f"up_index/up_weight: expected {L} tensors each, got {len(up_index)} and {len(up_weight)}"
            )
        for l in range(L):
            _check_level_index(up_index[l], f"up_index[{l}]", (sizes[l], 3), sizes[l + 1], l + 1)
        self.num_vertices = sizes
        self.activation = activation_name(activation)  # validated early
        self.check_finite = check_bool(check_finite, "check_finite")
        self.template_hash: str | None = None

        self.fc = nn.Linear(self.latent_size, sizes[L] * self.channels[-1])
        # Block i runs at level L-1-i: up-sample from level L-i, then conv.
        self.ups = nn.ModuleList(UpSample(up_index[l], up_weight[l], num_in=sizes[l + 1]) for l in reversed(range(L)))
        self.convs = nn.ModuleList()
        self.act = make_activation(self.activation)
        self.register_buffer("mean", torch.zeros(sizes[0], self.out_channels))
        self.register_buffer("std", torch.ones(sizes[0], self.out_channels))

    def _build_convs(self) -> None:
        """Create the per-level convs and the output conv (called by subclasses)."""
        L = len(self.channels)
        for i, l in enumerate(reversed(range(L))):
            cin = self.channels[-1] if i == 0 else self.channels[l + 1]
            self.convs.append(self._make_conv(l, cin, self.channels[l]))
        self.out_conv = self._make_conv(0, self.channels[0], self.out_channels)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Xavier-uniform FC weight and zero bias (as SpiralNet++); each conv resets its own."""
        nn.init.xavier_uniform_(self.fc.weight)
        nn.init.zeros_(self.fc.bias)
        for conv in [*self.convs, self.out_conv]:
            if hasattr(conv, "reset_parameters"):
                conv.reset_parameters()

    def _make_conv(self, level: int, in_channels: int, out_channels: int) -> nn.Module:  # pragma: no cover
        """The convolution of ``level`` (0 finest; the output convolution is made at level 0 too), mapping
        ``(B, V_level, in_channels)`` to ``(B, V_level, out_channels)``: the extension point of a decoder of
        one's own. The inference fast paths run only where every layer is the decoder's built-in one; any
        other module (a subclass, a wrapper) is called as written."""
        raise NotImplementedError

    # -------------------------------------------------------------- normalisation
    def set_normalization(self, mean: Any, std: Any) -> None:
        """Set the per-vertex output normalisation: outputs are ``y * std + mean``.

        Args:
            mean: ``(V_0, C_out)``, ``(C_out,)`` or a scalar.
            std: ``(V_0, C_out)``, ``(C_out,)`` or a scalar; finite and > 0.
        """
        V, C = self.num_vertices[0], self.out_channels
        checked = {}  # both checked in the buffers' dtype before either changes
        for name, value in (("mean", mean), ("std", std)):
            t = _as_float_tensor(value, name)
            try:
                t = torch.broadcast_to(t, (V, C))
            except RuntimeError:
                raise ValueError(f"{name}: expected shape ({V}, {C}), ({C},) or a scalar, got {tuple(t.shape)}") from None
            dtype = getattr(self, name).dtype
            cast = t.to(dtype)
            if not bool(torch.isfinite(cast).all()):
                raise ValueError(f"{name}: expected finite values in {dtype}, got non-finite entries")
            if name == "std" and not bool((cast > 0).all()):
                raise ValueError(f"std: expected positive values in {dtype}, got minimum {float(cast.min())}")
            checked[name] = cast
        for name, t in checked.items():
            write_buffer(getattr(self, name), t)

    # -------------------------------------------------------------------- forward
    def _check_latent(self, z: torch.Tensor) -> tuple[torch.Tensor, bool]:
        zb, unbatched = _batched_latent(z, self.latent_size, self.fc.weight)
        if self.check_finite and not bool(torch.isfinite(zb).all()):
            raise ValueError("z: expected finite latents, got NaN or inf")
        return zb, unbatched

    def decode_normalized(self, z: torch.Tensor) -> torch.Tensor:
        """The network output before the normalisation is undone: ``(B, V_0, C_out)``.

        ``z`` is ``(B, Z)`` or ``(Z,)`` in the decoder's dtype (under ``torch.autocast``
        also float32 or the autocast's dtype, as an encoder gives there). On the CPU without autograd the
        batch runs a few samples at a time (see :data:`DECODE_CHUNK_BYTES`), so every
        intermediate tensor stays in cache; compiled, the chunks share one compiled
        network (:func:`_decode_chunk`).
        """
        return self._decode_latents(z, data_units=False)

    def _decode_latents(self, z: torch.Tensor, data_units: bool) -> torch.Tensor:
        """:meth:`decode_normalized`, or with ``data_units`` the normalisation undone too (:meth:`forward`)."""
        zb, unbatched = self._check_latent(z)
        if torch.compiler.is_compiling():
            y = self._decode_chunks(zb, data_units)  # (B, V_0, C_out)
        else:
            with weight_blocks_scope():  # each spiral layer rearranges its weight once per call
                y = self._decode_chunks(zb, data_units)  # (B, V_0, C_out)
        return y[0] if unbatched else y

    def _decode_chunks(self, zb: torch.Tensor, data_units: bool = False) -> torch.Tensor:
        """``(B, Z) -> (B, V_0, C_out)``, in chunks of :meth:`_chunk_size` samples; with
        ``data_units``, ``y * std + mean``.

        Chunked, each chunk is written into the output once, already in data units: no
        second batch-sized tensor. (On 2 CPU cores a fresh one per call at batch 256,
        15 MB, grew the heap past glibc's trim threshold, so every call faulted its
        pages in again.)
        """
        B = zb.shape[0]
        n = self._chunk_size(zb)
        if n >= B:
            y = self._decode(zb)  # (B, V_0, C_out)
            return torch.addcmul(self.mean, y, self.std) if data_units else y
        y = None
        for b0 in range(0, B, n):
            chunk = _decode_chunk(self, zb[b0 : b0 + n])  # (n, V_0, C_out)
            if y is None:  # in the dtype y * std + mean promotes to
                dtype = chunk.dtype
                if data_units:
                    dtype = torch.promote_types(torch.promote_types(dtype, self.mean.dtype), self.std.dtype)
                y = chunk.new_empty((B, *chunk.shape[1:]), dtype=dtype)  # (B, V_0, C_out)
            if data_units:
                torch.addcmul(self.mean, chunk, self.std, out=y[b0 : b0 + n])
            else:
                y[b0 : b0 + n] = chunk
        return y

    def _chunk_size(self, z: torch.Tensor) -> int:
        """Samples per chunk of a CPU inference decode (the whole batch otherwise)."""
        B = z.shape[0]
        if z.device.type != "cpu" or not inference_fast_path(z, module=self):
            return B
        per_sample = 4 * self.num_vertices[0] * max(*self.channels, self.out_channels) * z.element_size()
        return max(1, min(B, DECODE_CHUNK_BYTES // per_sample))

    def _decode(self, zb: torch.Tensor) -> torch.Tensor:
        """The network on a batch: ``(B, Z) -> (B, V_0, C_out)``."""
        B = zb.shape[0]
        L = len(self.channels)
        x = self.fc(zb)  # (B, V_L * c_{L-1})
        x = x.reshape(B, self.num_vertices[L], self.channels[-1])  # (B, V_L, c_{L-1})
        x = self._blocks(x)  # (B, V_0, c_0)
        return self.out_conv(x)  # (B, V_0, C_out)

    def _blocks(self, x: torch.Tensor) -> torch.Tensor:
        """[up-sample, conv, activation] per level: ``(B, V_L, c_{L-1}) -> (B, V_0, c_0)``."""
        for up, conv in zip(self.ups, self.convs):
            x = up(x)  # (B, V_l, c_in)
            x = self._activate(conv(x))  # (B, V_l, c_l)
        return x

    def _activate(self, h: torch.Tensor) -> torch.Tensor:
        """The activation; in place on the fresh conv output when autograd records nothing (not inside
        :func:`~mesh_decoder.nn.plain_formulation`, so forward hooks keep the conv's own output)."""
        inplace = _INPLACE_ACTIVATIONS.get(self.activation)
        if (inplace is None or h.requires_grad or torch.compiler.is_compiling() or torch.jit.is_tracing()
                or not fast_paths_enabled() or not _is_stock_activation(self.act, self.activation)):
            return self.act(h)
        return inplace(h)

    def _stock_layers(self, conv_cls: type) -> bool:
        """Whether every convolution is exactly ``conv_cls`` and every up-sampling exactly :class:`UpSample`:
        the fast paths read their buffers and weights directly, which a subclass's own ``forward`` (or a
        layer put in place of one) would not see; otherwise each layer is called."""
        return (all(type(conv) is conv_cls for conv in self.convs) and type(self.out_conv) is conv_cls
                and all(type(up) is UpSample for up in self.ups))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Meshes in data units ``(B, V_0, C_out)`` from latents ``(B, Z)`` (``(Z,) -> (V_0, C_out)``)."""
        y = self._decode_latents(z, data_units=True)  # (B, V_0, C_out) or (V_0, C_out): y * std + mean
        if self.check_finite and not bool(torch.isfinite(y).all()):
            raise ValueError("decoder output: expected finite values, got NaN or inf (check the weights and latent)")
        return y

    # --------------------------------------------------------------------- config
    def _base_config(self) -> dict[str, Any]:
        return {
            "class": type(self).__name__,
            "latent_size": self.latent_size,
            "channels": list(self.channels),
            "out_channels": self.out_channels,
            "activation": self.activation,
            "check_finite": self.check_finite,
            "num_vertices": list(self.num_vertices),
            "template_hash": self.template_hash,
        }

    def extra_repr(self) -> str:
        return (
            f"latent_size={self.latent_size}, channels={self.channels}, out_channels={self.out_channels}, "
            f"num_vertices={self.num_vertices}, activation={self.activation!r}"
            + (", check_finite=True" if self.check_finite else "")
        )


class SpiralDecoder(_SpiralLevels, GraphDecoder):
    r"""SpiralNet++ decoder (Gong et al., ICCVW 2019) with :class:`~mesh_decoder.nn.SpiralConv`.

    Each convolution gathers the features of a vertex's spiral and applies one
    linear map, :math:`x'_i = W\,[x_{s_{i,1}} \| \dots \| x_{s_{i,S}}] + b`.
    See :class:`GraphDecoder` for the architecture and the common arguments.

    Args:
        latent_size: ``Z``.
        channels: ``(c_0, ..., c_{L-1})``.
        spirals: ``L`` int64 tensors; ``spirals[l]`` ``(V_l, S_l)`` padded with ``V_l``.
        up_index: ``L`` tensors ``(V_l, 3)``.
        up_weight: ``L`` tensors ``(V_l, 3)``.
        num_vertices: ``(V_0, ..., V_L)``.
        out_channels: default 3.
        dilations: ``L`` ints, the dilation each spiral was built with (default 1; informative).
        activation: default ``"elu"``.
        check_finite: default ``False`` (see :class:`GraphDecoder`).

    Shapes:
        ``(B, Z) -> (B, V_0, out_channels)``; ``(Z,) -> (V_0, out_channels)``
    """

    def __init__(
        self,
        latent_size: int,
        channels: Sequence[int],
        spirals: Sequence[torch.Tensor],
        up_index: Sequence[torch.Tensor],
        up_weight: Sequence[torch.Tensor],
        num_vertices: Sequence[int],
        out_channels: int = 3,
        dilations: Sequence[int] | None = None,
        activation: str = "elu",
        check_finite: bool = False,
    ) -> None:
        super().__init__(latent_size, channels, num_vertices, up_index, up_weight, out_channels, activation, check_finite)
        self._build_spiral_convs(spirals, dilations)
        # Inference: each (up-sampling, convolution) pair as one projection + gather.
        self.fused = nn.ModuleList()
        self._refresh_fused()
        self.register_load_state_dict_post_hook(after_load("_refresh_fused"))

    def _sources(self) -> tuple[tuple[Any, ...], ...]:
        """What the fused gathers are made from: each convolution (a layer put in place of one) and where
        its spirals live, and where the up-sampling weights live with their version counters: an optimiser
        step on a trainable one, a new tensor put in its place or a move to another device changes them (an
        edit through ``.data`` does not). The index buffers change in place only by loading a state dict,
        whose hook remakes the gathers; an inference tensor (moved or cast under ``torch.inference_mode``)
        keeps no version counter. A few microseconds a call."""
        return tuple((conv, conv.indices.data_ptr() if isinstance(conv, SpiralConv) else None,
                      up.weight.data_ptr(), _version(up.weight)) for up, conv in zip(self.ups, self.convs))

    def _refresh_fused(self) -> None:
        """Remake the fused gathers; none where a convolution is no :class:`SpiralConv` (a ``_make_conv`` of
        one's own), which decodes layer by layer."""
        if not all(isinstance(conv, SpiralConv) for conv in self.convs):
            self.fused = nn.ModuleList()
        elif len(self.fused) != len(self.convs):
            self.fused = nn.ModuleList(UpSpiralConv(up, conv) for up, conv in zip(self.ups, self.convs))
        else:
            for fused, up, conv in zip(self.fused, self.ups, self.convs):
                fused.refresh(up, conv)
        self._fused_sources = self._sources()

    def _blocks(self, x: torch.Tensor) -> torch.Tensor:
        """Without autograd, each block runs fused (:class:`~mesh_decoder.nn.UpSpiralConv`):
        the convolution's weight blocks multiply the coarse level, then one weighted
        gather up-samples and sums the spirals. Otherwise up-sample, then convolve."""
        if not inference_fast_path(x, module=self) or not self._stock_layers(SpiralConv):
            return super()._blocks(x)
        if not torch.compiler.is_compiling() and self._sources() != self._fused_sources:
            self._refresh_fused()  # up-sampling weights trained or replaced since the gathers were made
        if len(self.fused) != len(self.convs):  # built-in layers put back, first called compiled: no gathers yet
            return super()._blocks(x)
        stock_elu = self.activation == "elu" and _is_stock_activation(self.act, "elu")
        fused_act = "elu" if stock_elu else None  # applied inside the gather
        for fused, conv in zip(self.fused, self.convs):
            x = fused(x, conv.linear.weight, conv.linear.bias, fused_act)  # (B, V_l, c_l)
            if fused_act is None:
                x = self._activate(x)
        return x

    @classmethod
    def from_hierarchy(
        cls,
        hierarchy: MeshHierarchy,
        latent_size: int = 16,
        channels: Sequence[int] = (32, 32, 32, 64),
        out_channels: int = 3,
        spiral_length: int | Sequence[int] | None = None,
        activation: str = "elu",
        check_finite: bool = False,
    ) -> "SpiralDecoder":
        """Build on the first ``len(channels) + 1`` levels of ``hierarchy``.

        Args:
            hierarchy: the :class:`~mesh_decoder.hierarchy.MeshHierarchy` (its operators are
                copied into buffers; its template hash is kept for :meth:`config`).
            latent_size: ``Z``, default 16.
            channels: features at levels ``0..L-1``, finest first (the fully connected layer
                feeds ``channels[-1]`` at level ``L``); default ``(32, 32, 32, 64)``, SpiralNet++'s
                on COMA's 4 levels.
            out_channels: per-vertex outputs, default 3 (xyz; 6 for xyz and rgb).
            spiral_length: ``None`` (default) uses the hierarchy's spirals; an int
                or one int per level truncates them (each <= the hierarchy's,
                only for levels built with dilation 1). Dilations are the hierarchy's.
            activation: a name of :data:`~mesh_decoder.nn.ACTIVATIONS`, default ``"elu"``.
            check_finite: raise on a non-finite latent or output (a device sync per call),
                default ``False``.

        Shapes:
            ``forward``: ``(B, Z) -> (B, V_0, out_channels)``; ``(Z,) -> (V_0, out_channels)``.
        """
        channels = _check_channels(channels)
        L = len(channels)
        _check_levels(hierarchy, L)
        spirals, dilations = _level_spirals(hierarchy, spiral_length, L)
        return cls(
            latent_size,
            channels,
            spirals,
            hierarchy.up_index[:L],
            hierarchy.up_weight[:L],
            hierarchy.sizes[: L + 1],
            out_channels=out_channels,
            dilations=dilations,
            activation=activation,
            check_finite=check_finite,
        )._remember_hierarchy(hierarchy)

    def config(self) -> dict[str, Any]:
        """JSON-able constructor arguments, with the spiral lengths; rebuild with ``from_config(config, hierarchy)``."""
        return {**self._base_config(), "spiral_length": list(self.spiral_lengths)}


class ChebDecoder(_ChebLevels, GraphDecoder):
    r"""COMA decoder (Ranjan et al., ECCV 2018) with :class:`~mesh_decoder.nn.ChebConv`.

    Each convolution is a ``K``-term Chebyshev polynomial of the scaled
    Laplacian, :math:`x' = \sum_{k<K} T_k(\tilde L)\, x\, \Theta_k + b`. See
    :class:`GraphDecoder` for the architecture and the common arguments.

    Args:
        latent_size: ``Z``.
        channels: ``(c_0, ..., c_{L-1})``.
        K: number of Chebyshev terms (polynomial order ``K - 1``; :meth:`from_hierarchy` defaults to 6).
        laplacian_index: ``L`` int64 tensors ``(2, E_l)``.
        laplacian_weight: ``L`` float tensors ``(E_l,)``.
        up_index: ``L`` tensors ``(V_l, 3)``.
        up_weight: ``L`` tensors ``(V_l, 3)``.
        num_vertices: ``(V_0, ..., V_L)``.
        out_channels: default 3.
        activation: default ``"elu"``.
        check_finite: default ``False`` (see :class:`GraphDecoder`).

    Shapes:
        ``(B, Z) -> (B, V_0, out_channels)``; ``(Z,) -> (V_0, out_channels)``
    """

    def __init__(
        self,
        latent_size: int,
        channels: Sequence[int],
        K: int,
        laplacian_index: Sequence[torch.Tensor],
        laplacian_weight: Sequence[torch.Tensor],
        up_index: Sequence[torch.Tensor],
        up_weight: Sequence[torch.Tensor],
        num_vertices: Sequence[int],
        out_channels: int = 3,
        activation: str = "elu",
        check_finite: bool = False,
    ) -> None:
        super().__init__(latent_size, channels, num_vertices, up_index, up_weight, out_channels, activation, check_finite)
        self._build_cheb_convs(K, laplacian_index, laplacian_weight)

    def _decode(self, zb: torch.Tensor) -> torch.Tensor:
        """On the CPU without autograd the features stay vertex-major, ``(V_l, B, c)``,
        from the latent to the output: every Laplacian product and up-sampling is then
        one ``embedding_bag`` over a ``(V_l, B*c)`` matrix, with no transposes between
        layers (:meth:`ChebConv.forward_vertex_major`,
        :meth:`UpSample.forward_vertex_major`); on CUDA too with
        :data:`~mesh_decoder.nn.cheb_conv.BAG_ON_CUDA`. Otherwise
        :meth:`GraphDecoder._decode`, the reference."""
        if (not bag_device(zb) or not inference_fast_path(zb, module=self) or not self._stock_layers(ChebConv)
                or not _is_stock_activation(self.act, self.activation)):  # a module of one's own sees (B, V, c)
            return super()._decode(zb)
        B = zb.shape[0]
        L = len(self.channels)
        x = self.fc(zb).view(B, self.num_vertices[L], self.channels[-1]).transpose(0, 1)  # (V_L, B, c_{L-1})
        for up, conv in zip(self.ups, self.convs):
            x = up.forward_vertex_major(x)  # (V_l, B, c_in)
            x = self._activate(conv.forward_vertex_major(x))  # (V_l, B, c_l)
        return self.out_conv.forward_vertex_major(x).transpose(0, 1).contiguous()  # (B, V_0, C_out)

    @classmethod
    def from_hierarchy(
        cls,
        hierarchy: MeshHierarchy,
        latent_size: int = 8,
        channels: Sequence[int] = (16, 16, 16, 32),
        K: int = 6,
        out_channels: int = 3,
        activation: str = "elu",
        check_finite: bool = False,
    ) -> "ChebDecoder":
        """Build on the first ``len(channels) + 1`` levels of ``hierarchy``.

        Args:
            hierarchy: the :class:`~mesh_decoder.hierarchy.MeshHierarchy` (its scaled Laplacians
                and sampling operators are copied into buffers).
            latent_size: ``Z``, default 8 (COMA's).
            channels: features at levels ``0..L-1``, finest first, default ``(16, 16, 16, 32)``
                (COMA's).
            K: Chebyshev polynomial order, default 6 (COMA's).
            out_channels: per-vertex outputs, default 3 (xyz; 6 for xyz and rgb).
            activation: a name of :data:`~mesh_decoder.nn.ACTIVATIONS`, default ``"elu"``
                (COMA's code used ReLU).
            check_finite: raise on a non-finite latent or output, default ``False``.

        Shapes:
            ``forward``: ``(B, Z) -> (B, V_0, out_channels)``; ``(Z,) -> (V_0, out_channels)``.
        """
        channels = _check_channels(channels)
        L = len(channels)
        _check_levels(hierarchy, L)
        return cls(
            latent_size,
            channels,
            K,
            *_level_laplacians(hierarchy, L),
            hierarchy.up_index[:L],
            hierarchy.up_weight[:L],
            hierarchy.sizes[: L + 1],
            out_channels=out_channels,
            activation=activation,
            check_finite=check_finite,
        )._remember_hierarchy(hierarchy)

    def config(self) -> dict[str, Any]:
        """JSON-able constructor arguments, with ``K``; rebuild with ``from_config(config, hierarchy)``."""
        return {**self._base_config(), "K": self.K}


class PyGDecoder(_PyGLevels, GraphDecoder):
    r"""Decoder over any PyTorch Geometric message-passing convolution.

    Each convolution is ``conv(in, out)`` from the given factory, adapted to
    ``(B, V, C)`` batches by :class:`~mesh_decoder.nn.PyGConv` on the level's
    mesh graph. See :class:`GraphDecoder` for the architecture and the common
    arguments.

    Args:
        latent_size: ``Z``.
        channels: ``(c_0, ..., c_{L-1})``.
        conv: the name of a ``torch_geometric.nn`` class (``"GCNConv"``), such a
            class, or a factory ``(in_channels, out_channels) -> MessagePassing``.
            Only a name (or a class of ``torch_geometric.nn``) can be stored by
            :meth:`config`; with a factory, pass it again to :meth:`from_config`.
        edge_index: ``L`` int64 tensors ``(2, E_l)``, the directed edges of levels ``0..L-1``.
        up_index: ``L`` tensors ``(V_l, 3)``.
        up_weight: ``L`` tensors ``(V_l, 3)``.
        num_vertices: ``(V_0, ..., V_L)``.
        out_channels: default 3.
        conv_kwargs: extra keyword arguments for the conv class (default none).
        mode: :class:`~mesh_decoder.nn.PyGConv` batching mode (default ``"auto"``).
        activation: default ``"elu"``.
        check_finite: default ``False`` (see :class:`GraphDecoder`).
        pseudo: edge attributes for pseudo-coordinate convolutions (``GMMConv``,
            ``SplineConv``, ``NNConv``): a name in
            :data:`~mesh_decoder.nn.pyg_conv.PSEUDO_COORDINATES` (``"cartesian"``,
            ``"spherical"``, ``"distance"``), computed from ``level_vertices``; default
            ``None`` (the conv is called as ``conv(x, edge_index)``).
        level_vertices: ``L`` tensors ``(V_l, 3)``, the template's vertices at levels
            ``0..L-1``; needed with ``pseudo``.

    Shapes:
        ``(B, Z) -> (B, V_0, out_channels)``; ``(Z,) -> (V_0, out_channels)``
    """

    def __init__(
        self,
        latent_size: int,
        channels: Sequence[int],
        conv: str | type | Callable[[int, int], nn.Module],
        edge_index: Sequence[torch.Tensor],
        up_index: Sequence[torch.Tensor],
        up_weight: Sequence[torch.Tensor],
        num_vertices: Sequence[int],
        out_channels: int = 3,
        conv_kwargs: Mapping[str, Any] | None = None,
        mode: str = "auto",
        activation: str = "elu",
        check_finite: bool = False,
        pseudo: str | None = None,
        level_vertices: Sequence[torch.Tensor] | None = None,
    ) -> None:
        super().__init__(latent_size, channels, num_vertices, up_index, up_weight, out_channels, activation, check_finite)
        self._build_pyg_convs(conv, edge_index, conv_kwargs, mode, pseudo, level_vertices)

    @classmethod
    def from_hierarchy(
        cls,
        hierarchy: MeshHierarchy,
        conv: str | type | Callable[[int, int], nn.Module] = "GCNConv",
        latent_size: int = 16,
        channels: Sequence[int] = (32, 32, 32, 64),
        out_channels: int = 3,
        conv_kwargs: Mapping[str, Any] | None = None,
        mode: str = "auto",
        activation: str = "elu",
        check_finite: bool = False,
        pseudo: str | None = None,
    ) -> "PyGDecoder":
        """Build on the first ``len(channels) + 1`` levels of ``hierarchy`` (with ``pseudo``,
        edge attributes from their template vertices, e.g. ``"GMMConv"`` with
        ``conv_kwargs={"dim": 3, "kernel_size": 4}`` and ``pseudo="cartesian"``).

        Args:
            hierarchy: the :class:`~mesh_decoder.hierarchy.MeshHierarchy`; each level's
                graph is its mesh edges.
            conv: a ``torch_geometric.nn`` conv class name (default ``"GCNConv"``), the class,
                or a factory ``(in_channels, out_channels) -> Module``.
            latent_size: ``Z``, default 16.
            channels: features at levels ``0..L-1``, finest first, default ``(32, 32, 32, 64)``.
            out_channels: per-vertex outputs, default 3.
            conv_kwargs: more keyword arguments of every conv (default none).
            mode: how the batch meets the conv: ``"auto"`` (default), or as the class
                docstring lists.
            activation: a name of :data:`~mesh_decoder.nn.ACTIVATIONS`, default ``"elu"``.
            check_finite: raise on a non-finite latent or output, default ``False``.
            pseudo: edge attributes from the template's vertices, one of
                :data:`~mesh_decoder.nn.PSEUDO_COORDINATES`, or ``None`` (default) for none.

        Shapes:
            ``forward``: ``(B, Z) -> (B, V_0, out_channels)``; ``(Z,) -> (V_0, out_channels)``.
        """
        channels = _check_channels(channels)
        L = len(channels)
        _check_levels(hierarchy, L)
        edges, level_vertices = cls._hierarchy_graphs(hierarchy, L, pseudo)
        return cls(
            latent_size,
            channels,
            conv,
            edges,
            hierarchy.up_index[:L],
            hierarchy.up_weight[:L],
            hierarchy.sizes[: L + 1],
            out_channels=out_channels,
            conv_kwargs=conv_kwargs,
            mode=mode,
            activation=activation,
            check_finite=check_finite,
            pseudo=pseudo,
            level_vertices=level_vertices,
        )._remember_hierarchy(hierarchy)


# ------------------------------------------------------------------------- texture


def _norm2d(kind: str, channels: int, num_groups: int) -> nn.Module:
    if kind == "group":
        return nn.GroupNorm(math.gcd(num_groups, channels), channels)
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=True)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"norm: expected 'group', 'batch', 'instance' or 'none', got {kind!r}")


#: ``UVTextureDecoder``'s normalisations and up-sampling modes.
_NORMS = ("group", "batch", "instance", "none")
_UPSAMPLES = ("transpose", "nearest")


def _texture_pair(texture_size: int | Sequence[int]) -> tuple[int, int]:
    """``texture_size`` as ``(H, W)``: an int or a pair of ints (``TypeError`` for anything else: a float, a
    string, a pair holding one; ``ValueError`` for a sequence of ints of another length)."""
    if is_integer(texture_size):
        return int(texture_size), int(texture_size)
    if (isinstance(texture_size, Sequence) and not isinstance(texture_size, (str, bytes))
            and all(is_integer(s) for s in texture_size)):
        if len(texture_size) == 2:
            return int(texture_size[0]), int(texture_size[1])
        raise ValueError(f"texture_size: expected an int or (H, W) ints, got {len(texture_size)} ints "
                         f"{texture_size!r}")
    raise TypeError(f"texture_size: expected an int or (H, W) ints, got {type(texture_size).__name__} "
                    f"{texture_size!r}")


def _texture_side(texture_size: int | Sequence[int]) -> int:
    """The side ``H`` of a square texture: ``texture_size`` is ``H`` or ``(H, H)``, a power of two >= 8."""
    H, W = _texture_pair(texture_size)
    if H != W or H < 8 or H & (H - 1):
        # the size as given: 24, not the (24, 24) it stands for
        raise ValueError(f"texture_size: expected a square power of two >= 8 (4 * 2**n), got {texture_size!r}")
    return H


class UVTextureDecoder(nn.Module):
    r"""2D convolutional UV texture decoder (the ``"cnn"`` texture branch).

    In the style of the UV-space decoders of nonlinear 3D morphable models
    (Tran & Liu, "Nonlinear 3D Face Morphable Model", CVPR 2018): a fully
    connected layer to a ``4 x 4 x C`` map, then ``n = log2(H / 4)`` stages
    that double the resolution, then a 3x3 convolution and a sigmoid:

    .. code-block:: text

        z --FC--> (B, C, 4, 4) -> norm -> act
          n x [x2 up-sampling conv -> norm -> act]      C halves per stage, floored at min_channels
          conv3x3 -> sigmoid -> (B, out_channels, H, W) in [0, 1]

    Args:
        latent_size: ``Z``.
        texture_size: ``H = W``, a power of two >= 8 (default 256: 6 stages): an int ``H``, or a square
            pair ``(H, H)``.
        channels: ``C`` at 4x4 (default 256).
        min_channels: floor of the halving (default 16).
        norm: ``"group"`` (default), ``"batch"``, ``"instance"`` or ``"none"``.
        upsample: ``"transpose"`` (default: ``ConvTranspose2d(k=4, s=2, p=1)``) or
            ``"nearest"`` (nearest x2 up-sampling then a 3x3 conv, free of
            checkerboard artefacts).
        activation: a name in :data:`ACTIVATIONS` (default ``"elu"``).
        num_groups: GroupNorm groups (the gcd with the width is used; default 8).
        out_channels: texture channels (default 3, RGB).

    Shapes:
        ``(B, Z) -> (B, out_channels, H, W)``; ``(Z,) -> (out_channels, H, W)``
    """

    def __init__(
        self,
        latent_size: int,
        texture_size: int | Sequence[int] = 256,
        channels: int = 256,
        min_channels: int = 16,
        norm: str = "group",
        upsample: str = "transpose",
        activation: str = "elu",
        num_groups: int = 8,
        out_channels: int = 3,
    ) -> None:
        super().__init__()
        self.latent_size = positive_int(latent_size, "latent_size")
        self.texture_size = _texture_side(texture_size)
        self.channels = positive_int(channels, "channels")
        self.min_channels = positive_int(min_channels, "min_channels")
        if norm not in _NORMS:
            raise ValueError(f"norm: expected one of {_NORMS}, got {norm!r}")
        self.norm = str(norm)
        self.upsample = str(upsample)
        self.activation = activation_name(activation)
        self.num_groups = positive_int(num_groups, "num_groups")
        self.out_channels = positive_int(out_channels, "out_channels")
        if upsample not in _UPSAMPLES:
            raise ValueError(f"upsample: expected one of {_UPSAMPLES}, got {upsample!r}")
        self.num_stages = int(math.log2(self.texture_size // 4))

        self.fc = nn.Linear(self.latent_size, self.channels * 16)
        self.stem = nn.Sequential(_norm2d(self.norm, self.channels, self.num_groups), make_activation(self.activation))
        stages = []
        cin = self.channels
        for _ in range(self.num_stages):
            cout = max(cin // 2, self.min_channels)
            if self.upsample == "transpose":
                up: list[nn.Module] = [nn.ConvTranspose2d(cin, cout, kernel_size=4, stride=2, padding=1)]
            else:
                up = [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(cin, cout, kernel_size=3, padding=1)]
            stages.append(nn.Sequential(*up, _norm2d(self.norm, cout, self.num_groups), make_activation(self.activation)))
            cin = cout
        self.stages = nn.Sequential(*stages)
        self.head = nn.Conv2d(cin, self.out_channels, kernel_size=3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Textures ``(B, 3, S, S)`` (row 0 at the top, not clamped) from latents ``(B, Z)``."""
        zb, unbatched = _batched_latent(z, self.latent_size, self.fc.weight)  # (B, Z)
        x = self.fc(zb).reshape(zb.shape[0], self.channels, 4, 4)  # (B, C, 4, 4)
        x = self.stages(self.stem(x))  # (B, C_last, H, W)
        tex = torch.sigmoid(self.head(x))  # (B, out_channels, H, W)
        return tex[0] if unbatched else tex

    def config(self) -> dict[str, Any]:
        """JSON-able constructor arguments; rebuild with ``from_config(config)``."""
        return {
            "class": type(self).__name__,
            "latent_size": self.latent_size,
            "texture_size": self.texture_size,
            "channels": self.channels,
            "min_channels": self.min_channels,
            "norm": self.norm,
            "upsample": self.upsample,
            "activation": self.activation,
            "num_groups": self.num_groups,
            "out_channels": self.out_channels,
        }

    @classmethod
    def from_config(cls, config: Mapping[str, Any], hierarchy: MeshHierarchy | None = None) -> "UVTextureDecoder":
        """Rebuild from :meth:`config` (the hierarchy is not needed and ignored)."""
        return cls(**_split_config(config, cls))

    def extra_repr(self) -> str:
        return (
            f"latent_size={self.latent_size}, texture_size={self.texture_size}, channels={self.channels}, "
            f"stages={self.num_stages}, norm={self.norm!r}, upsample={self.upsample!r}"
        )


class JointOutput(NamedTuple):
    """Output of :class:`JointDecoder`.

    Attributes:
        vertices: ``(B, V, 3)`` positions in data units.
        texture: ``(B, 3, H, W)`` UV texture (row 0 at the top, ``v`` from the bottom).
        colors: ``(B, V, 3)`` per-vertex colours (``"mesh"`` branch), or ``None`` (``"cnn"``).
        mask: ``(H, W)`` bool texel coverage of the template's UV layout, or ``None``
            when no texel map is known.
    """

    vertices: torch.Tensor
    texture: torch.Tensor
    colors: torch.Tensor | None
    mask: torch.Tensor | None


class JointDecoder(nn.Module):
    r"""Shape and UV texture from one latent code.

    ``texture_branch="mesh"``: the graph decoder outputs 6 channels per vertex,
    xyz and RGB decoded together (the coloured-mesh decoder of "Dense 3D Face
    Decoding over 2500FPS", Zhou et al., CVPR 2019); the colours are written
    into the UV map by :class:`~mesh_decoder.nn.texture.TexelGather`,
    ``tex[b, :, i, j] = sum_k w[i, j, k] * colors[b, n[i, j, k]]``. That texture is
    an interpolated view of the per-vertex colours, as in the paper: it holds no
    detail finer than the mesh. Colours are in data units through the decoder's
    6-channel ``mean``/``std`` buffers (not clamped, so gradients flow): RGB in
    ``[0, 1]`` once the buffers hold the data's statistics (training sets them;
    :meth:`GraphDecoder.set_normalization` by hand). A fresh decoder's buffers are
    0 and 1, so its colours spread around 0 until then.

    ``texture_branch="cnn"``: the graph decoder outputs the shape (3 channels)
    and a :class:`UVTextureDecoder` decodes the texture from the same latent;
    ``colors`` is ``None``.

    Args:
        decoder: a :class:`GraphDecoder` with ``out_channels`` 6 (mesh) or 3 (cnn).
        texture_branch: ``"mesh"`` (default) or ``"cnn"``.
        texel_map: the template's :class:`~mesh_decoder.hierarchy.TexelMap`;
            required for ``"mesh"``, optional for ``"cnn"`` (gives :attr:`JointOutput.mask`).
        texture_size: texture side; ``None`` (default) takes the texel map's, or 256.
            The mesh branch's size is the texel map's.
        texture_channels: ``"cnn"`` width at 4x4 (default 256).
        min_texture_channels: ``"cnn"`` width floor (default 16).
        texture_norm: ``"cnn"`` normalisation (default ``"group"``).
        texture_upsample: ``"cnn"`` up-sampling, ``"transpose"`` (default) or ``"nearest"``.

    Shapes:
        ``(B, Z) ->`` vertices ``(B, V, 3)``, texture ``(B, 3, H, W)``, colours
        ``(B, V, 3)``, mask ``(H, W)``; an unbatched ``(Z,)`` drops ``B``.
    """

    def __init__(
        self,
        decoder: GraphDecoder,
        texture_branch: str = "mesh",
        texel_map: TexelMap | None = None,
        texture_size: int | Sequence[int] | None = None,
        texture_channels: int = 256,
        min_texture_channels: int = 16,
        texture_norm: str = "group",
        texture_upsample: str = "transpose",
    ) -> None:
        super().__init__()
        if not isinstance(decoder, GraphDecoder):
            raise TypeError(f"decoder: expected a GraphDecoder, got {type(decoder).__name__}")
        if texture_branch not in ("mesh", "cnn"):
            raise ValueError(f"texture_branch: expected 'mesh' or 'cnn', got {texture_branch!r}")
        self.decoder = decoder
        self.texture_branch = texture_branch
        # checked for either branch: the config keeps them
        if texture_norm not in _NORMS:
            raise ValueError(f"texture_norm: expected one of {_NORMS}, got {texture_norm!r}")
        if texture_upsample not in _UPSAMPLES:
            raise ValueError(f"texture_upsample: expected one of {_UPSAMPLES}, got {texture_upsample!r}")
        self.texture_options = {
            "texture_channels": positive_int(texture_channels, "texture_channels"),
            "min_texture_channels": positive_int(min_texture_channels, "min_texture_channels"),
            "texture_norm": str(texture_norm),
            "texture_upsample": str(texture_upsample),
        }
        map_size = None if texel_map is None else texel_map.size
        if texture_branch == "mesh":
            if decoder.out_channels != 6:
                raise ValueError(
                    f"decoder: the mesh texture branch expects 6 output channels (xyz + rgb), got {decoder.out_channels}"
                )
            if texel_map is None:
                raise ValueError("texel_map: the mesh texture branch needs the template's texel map, got None")
            if texture_size is not None and _texture_pair(texture_size) != map_size:
                raise ValueError(
                    f"texture_size: the mesh branch draws at the texel map's size {map_size}, got {texture_size!r}"
                )
            self.texture = TexelGather.from_texel_map(texel_map, num_vertices=decoder.num_vertices[0])
            self.texture_size = map_size
        else:
            if decoder.out_channels != 3:
                raise ValueError(f"decoder: the cnn texture branch expects 3 output channels (xyz), got {decoder.out_channels}")
            if texture_size is None and map_size is not None and map_size[0] != map_size[1]:
                # the size came from the texel map: 'got (32, 32)' named a size the caller never gave
                raise ValueError(f"texel_map: the cnn texture branch draws square textures (a power of two >= 8 "
                                 f"per side), got a {map_size[0]} x {map_size[1]} texel map; build the hierarchy "
                                 "with a square texture_size or use the mesh branch")
            side = texture_size if texture_size is not None else (map_size[0] if map_size is not None else 256)
            side = _texture_side(side)
            if map_size is not None and map_size != (side, side):
                raise ValueError(f"texture_size: expected the texel map's size {map_size}, got {texture_size!r}")
            self.texture = UVTextureDecoder(
                decoder.latent_size,
                side,
                channels=texture_channels,
                min_channels=min_texture_channels,
                norm=texture_norm,
                upsample=texture_upsample,
                activation=decoder.activation,
            )
            self.texture_size = (side, side)
        mask = None if texel_map is None else texel_map.mask.clone()
        self.register_buffer("mask", mask)

    @property
    def latent_size(self) -> int:
        return self.decoder.latent_size

    @property
    def check_finite(self) -> bool:
        return self.decoder.check_finite

    @check_finite.setter
    def check_finite(self, value: bool) -> None:
        self.decoder.check_finite = bool(value)

    def set_normalization(self, mean: Any, std: Any) -> None:
        """Set the decoder's normalisation (6 channels xyz + rgb for the mesh branch, 3 for cnn)."""
        self.decoder.set_normalization(mean, std)

    def forward(self, z: torch.Tensor) -> JointOutput:
        """Shape, texture and (mesh branch) colours from latents ``(B, Z)``: a :class:`JointOutput`."""
        y = self.decoder(z)  # (B, V, 6) or (B, V, 3); validates z
        if self.texture_branch == "mesh":
            vertices = y[..., :3]  # (B, V, 3)
            colors = y[..., 3:]  # (B, V, 3)
            texture = self.texture(colors)  # (B, 3, H, W)
        else:
            vertices, colors = y, None
            texture = self.texture(z)  # (B, 3, H, W)
            if self.check_finite and not bool(torch.isfinite(texture).all()):
                raise ValueError("texture: expected finite values, got NaN or inf")
        return JointOutput(vertices, texture, colors, self.mask)

    @classmethod
    def from_hierarchy(
        cls,
        hierarchy: MeshHierarchy,
        texture_branch: str = "mesh",
        decoder: str | type[GraphDecoder] = "SpiralDecoder",
        texture_size: int | Sequence[int] | None = None,
        texture_channels: int = 256,
        min_texture_channels: int = 16,
        texture_norm: str = "group",
        texture_upsample: str = "transpose",
        **decoder_config: Any,
    ) -> "JointDecoder":
        """Build the graph decoder ``decoder`` (a class name) and the texture branch.

        Args:
            hierarchy: the :class:`~mesh_decoder.hierarchy.MeshHierarchy`; its texel map (needed
                by the ``"mesh"`` branch) gives the texture size and the coverage ``mask``.
            texture_branch: ``"mesh"`` (default: per-vertex colours gathered into the UV map) or
                ``"cnn"`` (a 2D convolutional :class:`UVTextureDecoder` from the latent).
            decoder: the graph decoder's class name, default ``"SpiralDecoder"`` (also
                ``"ChebDecoder"``, ``"PyGDecoder"``), or a :class:`GraphDecoder` subclass of one's
                own (register it with :func:`~mesh_decoder.model_files.register_model` to save the
                joint decoder: its config names the class).
            texture_size: the ``"cnn"`` branch's texture side; ``None`` (default) takes the
                texel map's, and with a texel map a given size must equal it. To decode another
                size than the hierarchy's map, build ``JointDecoder(graph, "cnn", None, size)``.
            texture_channels, min_texture_channels, texture_norm, texture_upsample: the
                ``"cnn"`` branch's :class:`UVTextureDecoder` arguments (defaults 256, 16,
                ``"group"``, ``"transpose"``).
            **decoder_config: the graph decoder's ``from_hierarchy`` arguments (``latent_size``,
                ``channels``, ...); ``out_channels`` is set to 6 (mesh: xyz and rgb) or 3 (cnn).

        Shapes:
            ``forward``: ``(B, Z) -> JointOutput(vertices (B, V, 3), texture (B, 3, H, W),
            colors (B, V, 3) or None, mask (H, W) or None)``.
        """
        if texture_branch not in ("mesh", "cnn"):
            raise ValueError(f"texture_branch: expected 'mesh' or 'cnn', got {texture_branch!r}")
        want = 6 if texture_branch == "mesh" else 3
        if decoder_config.get("out_channels", want) != want:
            raise ValueError(
                f"out_channels: the {texture_branch} branch needs {want}, got {decoder_config['out_channels']}"
            )
        decoder_config["out_channels"] = want
        own = isinstance(decoder, type) and issubclass(decoder, GraphDecoder)  # a user's graph decoder class
        graph_cls = decoder if own else config_class(decoder, _GRAPH_DECODERS, GraphDecoder)
        if graph_cls is None:
            raise ValueError(f"decoder: expected one of {sorted(_GRAPH_DECODERS)}, a GraphDecoder subclass or the "
                             f"name one is registered under (register_model), got {decoder!r}")
        graph = graph_cls.from_hierarchy(hierarchy, **decoder_config)
        return cls(graph, texture_branch, hierarchy.texel_map, texture_size, texture_channels,
                   min_texture_channels, texture_norm, texture_upsample)

    def config(self) -> dict[str, Any]:
        """JSON-able constructor arguments, the graph decoder's config nested; rebuild with
        ``from_config(config, hierarchy)``."""
        return {
            "class": type(self).__name__,
            "decoder": self.decoder.config(),
            "texture_branch": self.texture_branch,
            "texture_size": list(self.texture_size),
            **self.texture_options,
        }

    @classmethod
    def from_config(cls, config: Mapping[str, Any], hierarchy: MeshHierarchy) -> "JointDecoder":
        """Rebuild from :meth:`config` on the same hierarchy (its graph decoder checked as its own
        ``from_config`` checks it; the texel map taken from ``hierarchy``)."""
        kwargs = _split_config(config, cls, takes=cls)
        graph = decoder_from_config(kwargs.pop("decoder"), hierarchy)
        if kwargs.get("texture_branch") == "mesh":
            kwargs.pop("texture_size", None)
        return cls(graph, texel_map=hierarchy.texel_map, **kwargs)

    def extra_repr(self) -> str:
        return f"texture_branch={self.texture_branch!r}, texture_size={self.texture_size}"


_GRAPH_DECODERS: dict[str, type[GraphDecoder]] = {
    "SpiralDecoder": SpiralDecoder,
    "ChebDecoder": ChebDecoder,
    "PyGDecoder": PyGDecoder,
}


def decoder_from_config(config: Mapping[str, Any], hierarchy: MeshHierarchy | None) -> nn.Module:
    """Rebuild any decoder of this module from its ``config()`` and the hierarchy it was made on
    (a :class:`UVTextureDecoder` needs none and ignores it)."""
    if not isinstance(config, Mapping):
        raise TypeError(f"config: expected a dict, got {type(config).__name__}")
    classes: dict[str, Any] = {**_GRAPH_DECODERS, "JointDecoder": JointDecoder, "UVTextureDecoder": UVTextureDecoder}
    name = config.get("class")
    cls = config_class(name, classes, GraphDecoder)
    if cls is None:
        raise ValueError(f"config: expected 'class' to be one of {sorted(classes)} or a GraphDecoder subclass "
                         f"registered with mesh_decoder.model_files.register_model, got {name!r}")
    return cls.from_config(config, hierarchy)


def config_class(name: Any, builtins: Mapping[str, type], base: type) -> type | None:
    """The class a config's ``"class"`` names: one of ``builtins``, else the class registered under ``name``
    with :func:`~mesh_decoder.model_files.register_model` when it subclasses ``base`` (a user's decoder
    inside a joint decoder or an autoencoder); ``None`` for anything else."""
    if not isinstance(name, str):
        return None
    if name in builtins:
        return builtins[name]
    from ..model_files import _REGISTRY  # here, not at the top: model_files imports this module

    entry = _REGISTRY.get(name)
    cls = None if entry is None else entry.cls
    return cls if isinstance(cls, type) and issubclass(cls, base) else None
