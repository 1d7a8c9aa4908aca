r"""Run any PyTorch Geometric convolution on batches of meshes that share one topology.

PyG convolutions take node features ``(N, C)`` and an ``edge_index``. Mesh decoders
work on batches ``(B, V, C)`` over one fixed mesh. :class:`PyGConv` bridges the two
in one of two ways:

- ``"batched"``: call ``conv(x, edge_index)`` once with ``x`` of shape ``(B, V, C)``.
  Convolutions whose messages and updates act on the last dimension only and that
  aggregate over ``node_dim=-2`` (``ChebConv``, ``GCNConv``, ``SAGEConv``,
  ``GraphConv``, ...) treat the leading dimension as a batch of graphs sharing the
  edges. No copy of the graph is made.
- ``"union"``: the disjoint union of ``B`` copies of the mesh, the batching of
  PyG's ``DataLoader``: ``x.reshape(B*V, C)`` with the edges of sample ``b`` offset
  by ``b*V``. Correct for every convolution called as ``conv(x, edge_index)``
  (attention and learned-neighbourhood ones: ``GATConv``, ``FeaStConv``, ...), at
  the cost of a ``(2, B*E)`` edge index, cached per batch size in a non-persistent
  buffer so that it follows ``.to()``.

Pseudo-coordinate convolutions (``GMMConv`` of MoNet, ``SplineConv``, ``NNConv``)
take edge attributes: give ``edge_attr`` (``(E, D)``, e.g. :func:`pseudo_coordinates`
of the template level's vertices, PyG's ``Cartesian``, ``Spherical`` or ``Distance``
transform) and the conv is called as ``conv(x, edge_index, edge_attr)``, in
``"union"`` mode with the attributes repeated for every copy. Convolutions that need
positions (``PointNetConv``) are not supported: wrapping one is refused, as is a
pseudo-coordinate conv given no edge attributes.

Under ``torch.compile``, convolutions that add self-loops on every call
(``GCNConv``, ``GATConv`` by default) break the graph at PyG's data-dependent
``add_remaining_self_loops`` (still correct, but one graph per layer);
``SAGEConv``, ``GraphConv`` or ``GCNConv(add_self_loops=False)`` compile whole.

``"auto"`` picks ``"batched"`` for the classes known to batch correctly (each is
checked against a per-sample loop in the tests) and ``"union"`` for all others.
"""

from __future__ import annotations

import inspect

import numpy as np
import torch
from torch import Tensor, nn

from .._checks import check_tensor, positive_int
from ..hierarchy.container import MeshHierarchy
from .graph import after_load, check_features, hierarchy_level, mesh_edge_index

__all__ = ["PyGConv", "mesh_edge_index", "pseudo_coordinates", "BATCHED_CONVS", "PSEUDO_COORDINATES"]

#: Pseudo-coordinates of an edge: the ``torch_geometric.transforms`` class that computes
#: them (``norm=True``: scaled to ``[0, 1]`` by the largest value of the mesh level).
PSEUDO_COORDINATES = {"cartesian": "Cartesian", "spherical": "Spherical", "distance": "Distance"}


#: Convolutions that compute nothing meaningful, or fail, without edge attributes.
_NEEDS_EDGE_ATTR = frozenset({"GMMConv", "SplineConv", "NNConv", "ECConv", "GINEConv"})


def _check_called_plainly(conv: nn.Module) -> None:
    """Refuse (``ValueError``) a conv that cannot be called as ``conv(x, edge_index)`` without edge attributes:
    one that needs positions (``PointNetConv.forward(x, pos, edge_index)``; at the first call it said an
    ``edge_index`` was missing) or pseudo-coordinates (``GMMConv``: an AttributeError deep in PyG)."""
    name = type(conv).__name__
    if name in _NEEDS_EDGE_ATTR:
        raise ValueError(f"edge_attr: {name} needs edge attributes (pseudo-coordinates), got None; give edge_attr= "
                         "(PyGConv) or pseudo= (PyGDecoder.from_hierarchy), e.g. 'cartesian'")
    try:
        params = inspect.signature(conv.forward).parameters
    except (TypeError, ValueError):  # no signature to read: the first call tells
        return
    required = [n for n, p in params.items() if p.default is inspect.Parameter.empty
                and p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    if len(required) > 2 or (len(required) == 2 and required[1] != "edge_index"):
        raise ValueError(f"conv: expected a convolution called as conv(x, edge_index), got {name}.forward"
                         f"({', '.join(params)}); convolutions that need positions or other inputs are not supported")


def _check_takes_edge_attr(conv: nn.Module, dim: int) -> None:
    """Refuse (``ValueError``) a conv that would not use ``(E, dim)`` edge attributes passed as
    ``conv(x, edge_index, edge_attr)``: one whose forward's third parameter is something else (GCNConv's
    edge weights: a shape error at the first call), one that ignores them (GATConv without ``edge_dim``), or
    one built for another attribute size (``edge_dim``; GMMConv's and SplineConv's ``dim``)."""
    name = type(conv).__name__
    try:
        params = list(inspect.signature(conv.forward).parameters)
    except (TypeError, ValueError):  # no signature to read: the first call tells
        return
    if len(params) < 3 or params[2] != "edge_attr":
        raise ValueError(f"edge_attr: expected a conv that takes edge attributes as conv(x, edge_index, edge_attr) "
                         f"(GMMConv, SplineConv, NNConv, ...), got {name}.forward({', '.join(params)}); leave the "
                         "pseudo-coordinates out for it")
    sizes = [("edge_dim", getattr(conv, "edge_dim", dim))]
    if name in ("GMMConv", "SplineConv"):
        sizes.append(("dim", getattr(conv, "dim", dim)))
    for key, size in sizes:
        if size is None:
            raise ValueError(f"edge_attr: {name} uses edge attributes only with {key} set: expected {key}={dim} "
                             f"(the pseudo-coordinates' size), got None")
        if isinstance(size, int) and size != dim:
            raise ValueError(f"edge_attr: expected {name} with {key}={dim} (the pseudo-coordinates' size), got "
                             f"{key}={size}")


def pseudo_coordinates(kind: str, vertices: Tensor, edge_index: Tensor) -> Tensor:
    """Edge attributes of a mesh level by PyG's transform ``PSEUDO_COORDINATES[kind]``.

    ``"cartesian"``: the edge vector ``pos[j] - pos[i]`` (as PyG orders it), scaled into
    ``[0, 1]``; ``"spherical"``: its length and two angles; ``"distance"``: its length.

    Shapes: ``vertices (V, 3), edge_index (2, E) -> (E, D)``, ``D`` = 3, 3 or 1, float32;
    ``edge_index`` a tensor or a numpy array (as :func:`mesh_decoder.hierarchy.mesh_edge_index` gives).
    """
    if kind not in PSEUDO_COORDINATES:
        raise ValueError(f"pseudo: expected one of {sorted(PSEUDO_COORDINATES)} or None, got {kind!r}")
    if not isinstance(edge_index, (torch.Tensor, np.ndarray)):
        raise TypeError(f"edge_index: expected a tensor or numpy array, got {type(edge_index).__name__}")
    edge_index = torch.as_tensor(edge_index, device="cpu")
    if edge_index.is_floating_point() or edge_index.is_complex() or edge_index.dtype == torch.bool:
        raise TypeError(f"edge_index: expected integer indices, got dtype {edge_index.dtype}")
    if edge_index.dim() != 2 or edge_index.shape[0] != 2:
        raise ValueError(f"edge_index: expected shape (2, E), got {tuple(edge_index.shape)}")
    import torch_geometric.transforms as T
    from torch_geometric.data import Data

    transform = getattr(T, PSEUDO_COORDINATES[kind])(norm=True, cat=False)
    data = transform(Data(pos=torch.as_tensor(vertices, dtype=torch.float32), edge_index=edge_index.long()))
    attr = data.edge_attr
    return (attr if attr.dim() == 2 else attr.view(-1, 1)).to(torch.float32)  # (E, D)


#: PyG classes whose output on ``(B, V, C)`` equals a loop over the samples
#: (for the simple aggregations in :data:`_BATCHED_AGGRS`); exact class names, so a
#: subclass that changes ``forward`` falls back to ``"union"``.
BATCHED_CONVS = frozenset({
    "ChebConv", "GCNConv", "SAGEConv", "GraphConv", "TAGConv", "SGConv", "SSGConv", "LEConv",
    "ResGatedGraphConv", "MFConv", "LGConv", "ClusterGCNConv",
})
_BATCHED_AGGRS = frozenset({"add", "sum", "mean", "max", "min"})
_MODES = ("auto", "batched", "union")


def _batches_correctly(conv: nn.Module) -> bool:
    cls = type(conv)
    if cls.__name__ not in BATCHED_CONVS or not cls.__module__.startswith("torch_geometric."):
        return False
    aggr = getattr(conv, "aggr", "add")
    return isinstance(aggr, str) and aggr in _BATCHED_AGGRS


class PyGConv(nn.Module):
    r"""Adapter: a PyG ``MessagePassing`` convolution on ``(B, V, C)`` mesh batches.

    .. math::

        \mathbf{X}'_b = \mathrm{conv}(\mathbf{X}_b, \mathcal{E}) \quad \text{for every sample } b,

    computed in one call, either on the batch directly (``"batched"``) or on the
    disjoint union of the ``B`` graphs (``"union"``); see the module docstring.

    Args:
        conv: the convolution (typically a ``torch_geometric.nn.MessagePassing``),
            called as ``conv(x, edge_index)``; a submodule of this layer.
        edge_index: ``(2, E)`` int64 directed edges of the mesh in ``[0, V)``
            (:func:`mesh_edge_index` gives both directions of every face edge).
            Stored as the buffer ``edge_index``.
        num_vertices: ``V``.
        mode: ``"auto"`` (default), ``"batched"`` or ``"union"``. ``auto`` resolves
            once, here; :attr:`mode` holds the result.
        edge_attr: ``(E, D)`` float edge attributes (pseudo-coordinates), or ``None``
            (default). Given, ``conv`` is called as ``conv(x, edge_index, edge_attr)``
            and the mode is ``"union"``. Stored as the buffer ``edge_attr``.

    Unlike the other layers, construction leaves ``conv``'s parameters as they are
    (call :meth:`reset_parameters` to re-initialise them).

    Shapes:
        - input: ``(B, V, C_in)`` or ``(V, C_in)``
        - output: ``(B, V, C_out)`` or ``(V, C_out)``

    Note:
        In ``"union"`` mode the graph seen by ``conv`` depends on ``B``; do not give it
        a conv that caches its normalised graph (``GCNConv(cached=True)``) unless the
        batch size never changes.
    """

    edge_index: Tensor
    union_edge_index: Tensor

    def __init__(self, conv: nn.Module, edge_index: Tensor, num_vertices: int, mode: str = "auto",
                 edge_attr: Tensor | None = None):
        super().__init__()
        if not isinstance(conv, nn.Module):
            raise TypeError(f"conv: expected a torch.nn.Module (a PyG MessagePassing), got {type(conv).__name__}")
        if mode not in _MODES:
            raise ValueError(f"mode: expected one of {_MODES}, got {mode!r}")
        self.num_vertices = positive_int(num_vertices, "num_vertices")
        check_tensor(edge_index, "edge_index", shape=(2, "E"), dtype=torch.int64)
        if edge_index.numel() and (int(edge_index.min()) < 0 or int(edge_index.max()) >= self.num_vertices):
            raise ValueError(
                f"edge_index: expected vertex indices in [0, {self.num_vertices}), "
                f"got range [{int(edge_index.min())}, {int(edge_index.max())}]"
            )
        if edge_attr is not None:
            check_tensor(edge_attr, "edge_attr", shape=(edge_index.shape[1], "D"))
            if not edge_attr.is_floating_point():
                raise TypeError(f"edge_attr: expected a floating dtype, got {edge_attr.dtype}")
            if mode == "batched":
                raise ValueError("mode: edge attributes need mode 'union' (or 'auto'), got 'batched'")
            _check_takes_edge_attr(conv, int(edge_attr.shape[1]))
        else:
            _check_called_plainly(conv)
        self.conv = conv
        if mode == "auto":
            mode = "batched" if edge_attr is None and _batches_correctly(conv) else "union"
        self.mode = mode
        self.register_buffer("edge_index", edge_index.detach().clone().contiguous())
        self.register_buffer("edge_attr", None if edge_attr is None else edge_attr.detach().clone().contiguous())
        # Union-graph edges for the last batch size seen (not saved; rebuilt on demand). Their batch size is
        # their width over E: no second attribute, so threads decoding at once never pair one batch's
        # count with another's edges.
        self.register_buffer("union_edge_index", edge_index.new_empty(2, 0), persistent=False)
        # A loaded state dict may bring another graph: the union edges are then rebuilt.
        self.register_load_state_dict_post_hook(after_load("_forget_union"))
        # No reset_parameters() here: ``conv`` arrives initialised (or trained) and
        # wrapping it must not change its weights.

    def _forget_union(self) -> None:
        """After a state-dict load (which may bring another graph): rebuild the union edges on demand."""
        self.union_edge_index = self.edge_index.new_empty(2, 0)

    def reset_parameters(self) -> None:
        """Reset the wrapped convolution's parameters (if it has ``reset_parameters``)."""
        if hasattr(self.conv, "reset_parameters"):
            self.conv.reset_parameters()

    @classmethod
    def from_hierarchy(cls, conv: nn.Module, hierarchy: MeshHierarchy, level: int, mode: str = "auto",
                       pseudo: str | None = None) -> "PyGConv":
        """``conv`` on the edges of ``hierarchy.levels[level]``'s faces, both directions, with
        :func:`pseudo_coordinates` of the level's vertices as edge attributes when ``pseudo`` names them."""
        lvl = hierarchy_level(hierarchy, level)
        edge_index = mesh_edge_index(lvl.faces, lvl.num_vertices)  # (2, E)
        attr = None if pseudo is None else pseudo_coordinates(pseudo, lvl.vertices, edge_index)  # (E, D)
        return cls(conv, edge_index, lvl.num_vertices, mode=mode, edge_attr=attr)

    @property
    def num_edges(self) -> int:
        return int(self.edge_index.shape[1])

    def union_edges(self, batch_size: int) -> Tensor:
        """Edges of ``batch_size`` disjoint copies of the mesh.

        Shapes: ``(2, E) -> (2, B*E)``; copy ``b`` uses vertices ``[b*V, (b+1)*V)``.
        Cached for the last batch size (outside ``torch.compile``).
        """
        ei = self.edge_index
        if not torch.compiler.is_compiling():
            cached = self.union_edge_index  # read once: another thread may replace it
            if cached.shape[1] == batch_size * ei.shape[1] and cached.device == ei.device and ei.shape[1]:
                return cached
        offsets = torch.arange(batch_size, device=ei.device) * self.num_vertices  # (B,)
        union = (ei.unsqueeze(1) + offsets.view(1, -1, 1)).reshape(2, -1)  # (2, B*E)
        if not torch.compiler.is_compiling():
            self.union_edge_index = union
        return union

    def forward(self, x: Tensor) -> Tensor:
        """Shapes: ``(B, V, C_in) -> (B, V, C_out)`` or ``(V, C_in) -> (V, C_out)``."""
        in_channels = getattr(self.conv, "in_channels", None)
        channels = in_channels if isinstance(in_channels, int) and in_channels > 0 else None
        param = next((p for p in self.conv.parameters() if p.is_floating_point()), None)
        x = check_features(x, self.num_vertices, channels, None if param is None else param.dtype,
                           self.edge_index.device)
        attr = () if self.edge_attr is None else (self.edge_attr.to(x.dtype),)  # (E, D)
        if x.dim() == 2:
            return self.conv(x, self.edge_index, *attr)  # (V, C_out)
        B, V, C = x.shape
        if self.mode == "batched":
            out = self.conv(x, self.edge_index)  # (B, V, C_out)
        else:
            union_attr = tuple(a.repeat(B, 1) for a in attr)  # (B*E, D): copy b's edges are rows b*E..
            out = self.conv(x.reshape(B * V, C), self.union_edges(B), *union_attr)  # (B*V, C_out)
            out = out.view(B, V, out.shape[-1])  # (B, V, C_out); -1 cannot be inferred for an empty batch
        if not isinstance(out, Tensor) or out.dim() != 3 or tuple(out.shape[:2]) != (B, V):
            found = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
            raise RuntimeError(
                f"{type(self.conv).__name__} in {self.mode!r} mode: expected an output of shape ({B}, {V}, C_out), "
                f"got {found}" + ("; try mode='union'" if self.mode == "batched" else "")
            )
        return out

    def extra_repr(self) -> str:
        attr = "" if self.edge_attr is None else f", edge_attr_dim={self.edge_attr.shape[1]}"
        return f"num_vertices={self.num_vertices}, num_edges={self.num_edges}, mode={self.mode!r}{attr}"
