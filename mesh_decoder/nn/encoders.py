r"""Mesh encoders: vertices to a latent code, the mirror of :mod:`mesh_decoder.nn.decoders`.

.. code-block:: text

    x (B, V_0, C_in)
      for l = 0, ..., L-1:   conv at level l (c_{l-1} or C_in -> c_l) -> activation -> down-sample to level l+1
      flatten (B, V_L * c_{L-1}) --FC--> z (B, Z)

as in the encoders of SpiralNet++ (Gong et al., ICCVW 2019, :class:`SpiralEncoder`) and COMA
(Ranjan et al., ECCV 2018, :class:`ChebEncoder`), or with any PyTorch Geometric convolution
(:class:`PyGEncoder`). Encoders work in normalised units: :class:`~mesh_decoder.nn.MeshAutoencoder`
subtracts the decoder's ``mean`` and divides by its ``std`` before encoding, so
one pair of buffers serves both directions.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import torch
from torch import nn

from .._checks import positive_int
from ..hierarchy.container import MeshHierarchy
from .decoders import (
    HierarchyModel,
    _ChebLevels,
    _check_channels,
    _check_level_index,
    _check_level_sizes,
    _check_levels,
    _level_laplacians,
    _level_spirals,
    _PyGLevels,
    _SpiralLevels,
    activation_name,
    config_class,
    make_activation,
)
from .graph import takes_dtype
from .pool import DownSample

__all__ = ["GraphEncoder", "SpiralEncoder", "ChebEncoder", "PyGEncoder", "encoder_from_config"]


class GraphEncoder(HierarchyModel, nn.Module):
    r"""Base class of the graph encoders: [conv, activation, down-sample] per level, then FC.

    .. math::
        x_{l+1} = D_l\, \sigma(\mathrm{conv}_l(x_l))\ (l = 0, \dots, L-1), \qquad
        z = W\, \mathrm{flatten}(x_L) + b

    with :math:`D_l` the vertex selection from level ``l`` to ``l + 1``.
    Subclasses supply the convolution through :meth:`_make_conv`.

    Args:
        in_channels: input features per vertex (3 for xyz).
        channels: ``(c_0, ..., c_{L-1})``.
        latent_size: ``Z``.
        num_vertices: ``(V_0, ..., V_L)``.
        down_index: ``L`` int64 tensors, ``down_index[l]`` ``(V_{l+1},)`` into level ``l``.
        activation: a name in :data:`~mesh_decoder.nn.decoders.ACTIVATIONS` (default ``"elu"``).

    Shapes:
        - input: ``(B, V_0, C_in)`` or ``(V_0, C_in)`` in normalised units
        - output: ``(B, Z)`` or ``(Z,)``
    """

    def __init__(
        self,
        in_channels: int,
        channels: Sequence[int],
        latent_size: int,
        num_vertices: Sequence[int],
        down_index: Sequence[torch.Tensor],
        activation: str = "elu",
    ) -> None:
        super().__init__()
        self.in_channels = positive_int(in_channels, "in_channels")
        self.channels = _check_channels(channels)
        self.latent_size = positive_int(latent_size, "latent_size")
        L = len(self.channels)
        sizes = _check_level_sizes(num_vertices, L)
        if len(down_index) != L:
            raise ValueError(f"down_index: expected {L} tensors, got {len(down_index)}")
        for l in range(L):
            _check_level_index(down_index[l], f"down_index[{l}]", (sizes[l + 1],), sizes[l], l)
        self.num_vertices = sizes
        self.activation = activation_name(activation)
        self.act = make_activation(self.activation)
        self.template_hash: str | None = None
        self.convs = nn.ModuleList()
        self.downs = nn.ModuleList(DownSample(down_index[l], num_in=sizes[l]) for l in range(L))
        self.fc = nn.Linear(sizes[L] * self.channels[-1], self.latent_size)

    def _build_convs(self) -> None:
        for l, cout in enumerate(self.channels):
            cin = self.in_channels if l == 0 else self.channels[l - 1]
            self.convs.append(self._make_conv(l, cin, cout))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Xavier-uniform FC weight and zero bias (as SpiralNet++); each conv resets its own."""
        nn.init.xavier_uniform_(self.fc.weight)
        nn.init.zeros_(self.fc.bias)
        for conv in self.convs:
            if hasattr(conv, "reset_parameters"):
                conv.reset_parameters()

    def _make_conv(self, level: int, in_channels: int, out_channels: int) -> nn.Module:  # pragma: no cover
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Latent codes of meshes in normalised units: ``(B, V_0, C_in) -> (B, Z)``, ``(V_0, C_in) -> (Z,)``."""
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"x: expected a torch.Tensor, got {type(x).__name__}")
        V, C = self.num_vertices[0], self.in_channels
        if x.dim() not in (2, 3) or tuple(x.shape[-2:]) != (V, C):
            raise ValueError(f"x: expected shape (B, {V}, {C}) or ({V}, {C}), got {tuple(x.shape)}")
        dtype = self.fc.weight.dtype
        if not takes_dtype(x, dtype):  # under autocast a user's layer before gives bf16, as for the decoders
            raise TypeError(f"x: expected dtype {dtype} (the encoder's), got {x.dtype}")
        device = self.fc.weight.device
        if x.device != device:
            raise ValueError(f"x: expected a tensor on {device} (the encoder's), got one on {x.device}")
        unbatched = x.dim() == 2
        h = x.unsqueeze(0) if unbatched else x  # (B, V_0, C_in)
        for conv, down in zip(self.convs, self.downs):
            h = down(self.act(conv(h)))  # (B, V_{l+1}, c_l)
        flat = h.reshape(h.shape[0], self.fc.in_features)  # (B, V_L * c_{L-1}); -1 fails for an empty batch
        z = self.fc(flat)  # (B, Z)
        return z[0] if unbatched else z

    def _base_config(self) -> dict[str, Any]:
        return {
            "class": type(self).__name__,
            "in_channels": self.in_channels,
            "channels": list(self.channels),
            "latent_size": self.latent_size,
            "activation": self.activation,
            "num_vertices": list(self.num_vertices),
            "template_hash": self.template_hash,
        }

    def extra_repr(self) -> str:
        return (
            f"in_channels={self.in_channels}, channels={self.channels}, latent_size={self.latent_size}, "
            f"num_vertices={self.num_vertices}, activation={self.activation!r}"
        )


class SpiralEncoder(_SpiralLevels, GraphEncoder):
    """SpiralNet++ encoder (Gong et al., ICCVW 2019) with :class:`~mesh_decoder.nn.SpiralConv`.

    Args:
        in_channels: input features per vertex.
        channels: ``(c_0, ..., c_{L-1})``.
        latent_size: ``Z``.
        spirals: ``L`` int64 tensors ``(V_l, S_l)`` padded with ``V_l``.
        down_index: ``L`` int64 tensors ``(V_{l+1},)``.
        num_vertices: ``(V_0, ..., V_L)``.
        dilations: ``L`` ints (default 1; informative, the spirals are already dilated).
        activation: default ``"elu"``.

    Shapes:
        ``(B, V_0, C_in) -> (B, Z)``; ``(V_0, C_in) -> (Z,)``
    """

    def __init__(
        self,
        in_channels: int,
        channels: Sequence[int],
        latent_size: int,
        spirals: Sequence[torch.Tensor],
        down_index: Sequence[torch.Tensor],
        num_vertices: Sequence[int],
        dilations: Sequence[int] | None = None,
        activation: str = "elu",
    ) -> None:
        super().__init__(in_channels, channels, latent_size, num_vertices, down_index, activation)
        self._build_spiral_convs(spirals, dilations)

    @classmethod
    def from_hierarchy(
        cls,
        hierarchy: MeshHierarchy,
        latent_size: int = 16,
        channels: Sequence[int] = (32, 32, 32, 64),
        in_channels: int = 3,
        spiral_length: int | Sequence[int] | None = None,
        activation: str = "elu",
    ) -> "SpiralEncoder":
        """Build on the first ``len(channels) + 1`` levels (spiral truncation as in
        :meth:`~mesh_decoder.nn.SpiralDecoder.from_hierarchy`).

        Args:
            hierarchy: the :class:`~mesh_decoder.hierarchy.MeshHierarchy`.
            latent_size: ``Z``, default 16.
            channels: features at levels ``0..L-1``, finest first (the decoder's list),
                default ``(32, 32, 32, 64)``.
            in_channels: per-vertex inputs, default 3 (xyz; 6 for xyz and rgb).
            spiral_length: ``None`` (default, the hierarchy's spirals), an int or one per level.
            activation: a name of :data:`~mesh_decoder.nn.ACTIVATIONS`, default ``"elu"``.

        Shapes:
            ``forward``: ``(B, V_0, in_channels) -> (B, Z)``; ``(V_0, in_channels) -> (Z,)``.
        """
        channels = _check_channels(channels)
        L = len(channels)
        _check_levels(hierarchy, L)
        spirals, dilations = _level_spirals(hierarchy, spiral_length, L)
        enc = cls(in_channels, channels, latent_size, spirals, hierarchy.down[:L], hierarchy.sizes[: L + 1],
                  dilations=dilations, activation=activation)
        enc._remember_hierarchy(hierarchy)
        return enc

    def config(self) -> dict[str, Any]:
        """JSON-able constructor arguments, with the spiral lengths; rebuild with ``from_config(config, hierarchy)``."""
        return {**self._base_config(), "spiral_length": list(self.spiral_lengths)}


class ChebEncoder(_ChebLevels, GraphEncoder):
    """COMA encoder (Ranjan et al., ECCV 2018) with :class:`~mesh_decoder.nn.ChebConv`.

    Args:
        in_channels: input features per vertex.
        channels: ``(c_0, ..., c_{L-1})``.
        latent_size: ``Z``.
        K: Chebyshev order (default 6 in :meth:`from_hierarchy`).
        laplacian_index: ``L`` int64 tensors ``(2, E_l)``.
        laplacian_weight: ``L`` float tensors ``(E_l,)``.
        down_index: ``L`` int64 tensors ``(V_{l+1},)``.
        num_vertices: ``(V_0, ..., V_L)``.
        activation: default ``"elu"``.

    Shapes:
        ``(B, V_0, C_in) -> (B, Z)``; ``(V_0, C_in) -> (Z,)``
    """

    def __init__(
        self,
        in_channels: int,
        channels: Sequence[int],
        latent_size: int,
        K: int,
        laplacian_index: Sequence[torch.Tensor],
        laplacian_weight: Sequence[torch.Tensor],
        down_index: Sequence[torch.Tensor],
        num_vertices: Sequence[int],
        activation: str = "elu",
    ) -> None:
        super().__init__(in_channels, channels, latent_size, num_vertices, down_index, activation)
        self._build_cheb_convs(K, laplacian_index, laplacian_weight)

    @classmethod
    def from_hierarchy(
        cls,
        hierarchy: MeshHierarchy,
        latent_size: int = 8,
        channels: Sequence[int] = (16, 16, 16, 32),
        K: int = 6,
        in_channels: int = 3,
        activation: str = "elu",
    ) -> "ChebEncoder":
        """Build on the first ``len(channels) + 1`` levels of ``hierarchy``.

        Args:
            hierarchy: the :class:`~mesh_decoder.hierarchy.MeshHierarchy`.
            latent_size: ``Z``, default 8 (COMA's).
            channels: features at levels ``0..L-1``, finest first, default ``(16, 16, 16, 32)``.
            K: Chebyshev polynomial order, default 6.
            in_channels: per-vertex inputs, default 3.
            activation: a name of :data:`~mesh_decoder.nn.ACTIVATIONS`, default ``"elu"``.

        Shapes:
            ``forward``: ``(B, V_0, in_channels) -> (B, Z)``; ``(V_0, in_channels) -> (Z,)``.
        """
        channels = _check_channels(channels)
        L = len(channels)
        _check_levels(hierarchy, L)
        enc = cls(
            in_channels,
            channels,
            latent_size,
            K,
            *_level_laplacians(hierarchy, L),
            hierarchy.down[:L],
            hierarchy.sizes[: L + 1],
            activation=activation,
        )
        enc._remember_hierarchy(hierarchy)
        return enc

    def config(self) -> dict[str, Any]:
        """JSON-able constructor arguments, with ``K``; rebuild with ``from_config(config, hierarchy)``."""
        return {**self._base_config(), "K": self.K}


class PyGEncoder(_PyGLevels, GraphEncoder):
    r"""Encoder over any PyTorch Geometric message-passing convolution, the mirror of
    :class:`~mesh_decoder.nn.PyGDecoder`.

    Each convolution is ``conv(in, out)`` from the given factory, adapted to
    ``(B, V, C)`` batches by :class:`~mesh_decoder.nn.PyGConv` on the level's mesh
    graph. See :class:`GraphEncoder` for the architecture.

    Args:
        in_channels: input features per vertex.
        channels: ``(c_0, ..., c_{L-1})``.
        latent_size: ``Z``.
        conv: the name of a ``torch_geometric.nn`` class (``"GCNConv"``), such a
            class, or a factory ``(in_channels, out_channels) -> MessagePassing``.
            Only a name (or a class of ``torch_geometric.nn``) can be stored by
            :meth:`config`; with a factory, pass it again to :meth:`from_config`.
        edge_index: ``L`` int64 tensors ``(2, E_l)``, the directed edges of levels ``0..L-1``.
        down_index: ``L`` int64 tensors ``(V_{l+1},)``.
        num_vertices: ``(V_0, ..., V_L)``.
        conv_kwargs: extra keyword arguments for the conv class (default none).
        mode: :class:`~mesh_decoder.nn.PyGConv` batching mode (default ``"auto"``).
        activation: default ``"elu"``.
        pseudo: edge attributes for pseudo-coordinate convolutions (``GMMConv``,
            ``SplineConv``, ``NNConv``): a name in
            :data:`~mesh_decoder.nn.pyg_conv.PSEUDO_COORDINATES`, computed from
            ``level_vertices``; default ``None`` (the conv is called as ``conv(x, edge_index)``).
        level_vertices: ``L`` tensors ``(V_l, 3)``, the template's vertices at levels
            ``0..L-1``; needed with ``pseudo``.

    Shapes:
        ``(B, V_0, C_in) -> (B, Z)``; ``(V_0, C_in) -> (Z,)``
    """

    def __init__(
        self,
        in_channels: int,
        channels: Sequence[int],
        latent_size: int,
        conv: str | type | Callable[[int, int], nn.Module],
        edge_index: Sequence[torch.Tensor],
        down_index: Sequence[torch.Tensor],
        num_vertices: Sequence[int],
        conv_kwargs: Mapping[str, Any] | None = None,
        mode: str = "auto",
        activation: str = "elu",
        pseudo: str | None = None,
        level_vertices: Sequence[torch.Tensor] | None = None,
    ) -> None:
        super().__init__(in_channels, channels, latent_size, num_vertices, down_index, activation)
        self._build_pyg_convs(conv, edge_index, conv_kwargs, mode, pseudo, level_vertices)

    @classmethod
    def from_hierarchy(
        cls,
        hierarchy: MeshHierarchy,
        conv: str | type | Callable[[int, int], nn.Module] = "GCNConv",
        latent_size: int = 16,
        channels: Sequence[int] = (32, 32, 32, 64),
        in_channels: int = 3,
        conv_kwargs: Mapping[str, Any] | None = None,
        mode: str = "auto",
        activation: str = "elu",
        pseudo: str | None = None,
    ) -> "PyGEncoder":
        """Build on the first ``len(channels) + 1`` levels of ``hierarchy`` (with ``pseudo``, edge
        attributes from their template vertices, as :meth:`~mesh_decoder.nn.PyGDecoder.from_hierarchy`).

        Args:
            hierarchy: the :class:`~mesh_decoder.hierarchy.MeshHierarchy`.
            conv: a ``torch_geometric.nn`` conv class name (default ``"GCNConv"``), the class,
                or a factory ``(in_channels, out_channels) -> Module``.
            latent_size: ``Z``, default 16.
            channels: features at levels ``0..L-1``, finest first, default ``(32, 32, 32, 64)``.
            in_channels: per-vertex inputs, default 3.
            conv_kwargs, mode, activation, pseudo: as in
                :meth:`~mesh_decoder.nn.PyGDecoder.from_hierarchy`.

        Shapes:
            ``forward``: ``(B, V_0, in_channels) -> (B, Z)``; ``(V_0, in_channels) -> (Z,)``.
        """
        channels = _check_channels(channels)
        L = len(channels)
        _check_levels(hierarchy, L)
        edges, level_vertices = cls._hierarchy_graphs(hierarchy, L, pseudo)
        enc = cls(in_channels, channels, latent_size, conv, edges, hierarchy.down[:L], hierarchy.sizes[: L + 1],
                  conv_kwargs=conv_kwargs, mode=mode, activation=activation, pseudo=pseudo,
                  level_vertices=level_vertices)
        enc._remember_hierarchy(hierarchy)
        return enc


_ENCODERS: dict[str, type[GraphEncoder]] = {
    "SpiralEncoder": SpiralEncoder,
    "ChebEncoder": ChebEncoder,
    "PyGEncoder": PyGEncoder,
}


def encoder_from_config(config: Mapping[str, Any], hierarchy: MeshHierarchy) -> GraphEncoder:
    """Rebuild an encoder from its ``config()`` and the hierarchy it was made on (a :class:`PyGEncoder`
    built with a conv factory function needs ``PyGEncoder.from_config(config, hierarchy, conv=...)``)."""
    if not isinstance(config, Mapping):
        raise TypeError(f"config: expected a dict, got {type(config).__name__}")
    name = config.get("class")
    cls = config_class(name, _ENCODERS, GraphEncoder)
    if cls is None:
        raise ValueError(f"config: expected 'class' to be one of {sorted(_ENCODERS)} or a GraphEncoder subclass "
                         f"registered with mesh_decoder.model_files.register_model, got {name!r}")
    return cls.from_config(config, hierarchy)
