r"""Conversion to and from PyTorch Geometric's mesh graphs (``Data`` / ``Batch``).

**Conventions, checked against** ``torch_geometric.data.Data`` **and** ``torch_geometric.io.read_ply``:

* A mesh is a ``Data`` with ``pos`` ``(V, 3)`` and ``face`` ``(3, F)`` int64, one
  column per triangle (here ``faces`` is ``(F, 3)``, one row per triangle; the
  winding is kept). PyG's mesh readers and datasets (``read_ply``, ``read_off``,
  ``FAUST``, ``CoMA``) give this layout, and its transforms (``FaceToEdge``,
  ``GenerateMeshNormals``) read it.
* Per-vertex colours travel as ``color`` ``(V, C)``. ``x`` (node features) is left
  for the user's model.
* A ``Batch`` (from ``Batch.from_data_list`` or a PyG ``DataLoader``) stacks the
  graphs: ``pos`` ``(N*V, 3)``, ``face`` offset by each graph's first vertex,
  ``batch`` and ``ptr``. Here a batch of meshes shares one topology:
  ``vertices`` ``(N, V, 3)`` and one ``faces`` ``(F, 3)``.

:func:`to_pyg` keeps the vertices' device, dtype and autograd graph (``pos`` of
the result is differentiable with respect to ``vertices``), so a decoder's output
can feed a PyG model and be trained through it. :func:`from_pyg` reads a ``Data``
or ``Batch`` of meshes registered to one template (as PyG's ``CoMA`` dataset
holds them) into the ``(N, V, 3)`` tensor the decoders, autoencoders and losses
here take. :func:`mesh_to_pyg` and :func:`mesh_from_pyg` convert a whole
:class:`~mesh_decoder.mesh.Mesh` (UVs and landmarks have no PyG counterpart and
are not carried).

PyTorch Geometric is imported only when these functions are called.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch

from .._checks import as_faces
from .container import Mesh

__all__ = ["PyGMeshes", "to_pyg", "from_pyg", "mesh_to_pyg", "mesh_from_pyg"]


class PyGMeshes(NamedTuple):
    """Meshes of one topology read from a PyG ``Data`` or ``Batch``.

    Attributes:
        vertices: ``(N, V, 3)``, ``pos`` of each graph (``N = 1`` for a ``Data``).
        faces: ``(F, 3)`` int64, shared by every graph.
        colors: ``(N, V, C)`` from ``color``, or ``None``.
    """

    vertices: torch.Tensor
    faces: torch.Tensor
    colors: torch.Tensor | None = None


def _pyg_data():
    from torch_geometric.data import Batch, Data

    return Data, Batch


def to_pyg(vertices: torch.Tensor, faces: Any, colors: torch.Tensor | None = None):
    """Meshes of one topology as a PyG ``Data`` (one mesh) or ``Batch`` (a batch).

    Args:
        vertices: ``(V, 3)`` for one mesh, ``(N, V, 3)`` for a batch (a decoder's output).
        faces: ``(F, 3)`` integer indices (tensor or array), shared by the batch.
        colors: per-vertex colours ``(V, C)`` or ``(N, V, C)`` (``JointOutput.colors``
            of a mesh-branch decoder, say), stored as ``color``. Default ``None``.

    Returns:
        ``Data(pos=(V, 3), face=(3, F))`` for ``(V, 3)`` vertices, else a ``Batch`` of ``N``
        such graphs (``pos`` ``(N*V, 3)``, ``face`` ``(3, N*F)`` offset per graph, ``batch``,
        ``ptr``). ``pos`` and ``color`` keep the inputs' device, dtype and autograd graph.
    """
    Data, Batch = _pyg_data()
    if not isinstance(vertices, torch.Tensor):
        raise TypeError(f"vertices: expected a torch.Tensor, got {type(vertices).__name__}")
    if vertices.dim() not in (2, 3) or vertices.shape[-1] != 3:
        raise ValueError(f"vertices: expected shape (V, 3) or (N, V, 3), got {tuple(vertices.shape)}")
    if not vertices.is_floating_point():
        raise TypeError(f"vertices: expected a floating dtype, got {vertices.dtype}")
    single = vertices.dim() == 2
    if not single and vertices.shape[0] == 0:
        raise ValueError(f"vertices: expected at least one mesh, got an empty batch {tuple(vertices.shape)}")
    batch = vertices.unsqueeze(0) if single else vertices  # (N, V, 3)
    N, V = int(batch.shape[0]), int(batch.shape[1])
    face = as_faces(faces, V, batch.device).t().contiguous()  # (3, F)
    color = None
    if colors is not None:
        if not isinstance(colors, torch.Tensor):
            raise TypeError(f"colors: expected a torch.Tensor, got {type(colors).__name__}")
        want = f"({V}, C)" if single else f"({N}, {V}, C)"
        if colors.dim() != vertices.dim() or tuple(colors.shape[:-1]) != tuple(vertices.shape[:-1]):
            raise ValueError(f"colors: expected shape {want} to match the vertices, got {tuple(colors.shape)}")
        if colors.device != batch.device:
            raise ValueError(f"colors: expected a tensor on {batch.device} (the vertices'), got one on {colors.device}")
        color = colors.unsqueeze(0) if single else colors  # (N, V, C)
    graphs = []
    for i in range(N):
        extra = {} if color is None else {"color": color[i]}  # (V, C)
        graphs.append(Data(pos=batch[i], face=face, **extra))  # pos (V, 3), face (3, F)
    return graphs[0] if single else Batch.from_data_list(graphs)


def _attribute(data: Any, key: str) -> torch.Tensor:
    value = getattr(data, key, None) if key in data else None
    if value is None:
        raise ValueError(f"data.{key}: expected a tensor, got none (a mesh graph has pos (V, 3) and face (3, F))")
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"data.{key}: expected a torch.Tensor, got {type(value).__name__}")
    return value


def from_pyg(data: Any) -> PyGMeshes:
    """Read a PyG ``Data`` or ``Batch`` of meshes that share one topology.

    Every graph must have the same vertex count and the same faces (relative to its
    own first vertex), as meshes registered to one template do; ``pos`` is then
    viewed as ``(N, V, 3)`` without a copy where its layout allows.

    Args:
        data: a ``Data`` with ``pos`` ``(V, 3)`` and ``face`` ``(3, F)`` (and optionally
            ``color`` ``(V, C)``), or a ``Batch`` of them.

    Returns:
        :class:`PyGMeshes`: ``vertices`` ``(N, V, 3)``, ``faces`` ``(F, 3)``, ``colors``.

    Raises:
        TypeError: ``data`` is not a PyG ``Data``/``Batch``, or an attribute has the wrong type.
        ValueError: ``pos`` or ``face`` is missing or misshapen, a face index is out of range,
            or the graphs differ in vertex count or faces (the message names the graph).
    """
    Data, Batch = _pyg_data()
    if not isinstance(data, Data):  # a Batch of Data graphs is a Data too
        raise TypeError(f"data: expected a torch_geometric.data.Data or Batch, got {type(data).__name__}")
    pos = _attribute(data, "pos")
    face = _attribute(data, "face")
    if pos.dim() != 2 or pos.shape[1] != 3:
        raise ValueError(f"data.pos: expected shape (V, 3), got {tuple(pos.shape)}")
    if not pos.is_floating_point():
        raise TypeError(f"data.pos: expected a floating dtype, got {pos.dtype}")
    if face.dim() != 2 or face.shape[0] != 3:
        raise ValueError(f"data.face: expected shape (3, F), got {tuple(face.shape)}")
    total = int(pos.shape[0])
    faces = as_faces(face.t(), total, pos.device, "data.face")  # (N*F, 3)
    color = None
    if "color" in data and data.color is not None:
        color = _attribute(data, "color")
        if color.dim() != 2 or color.shape[0] != total:
            raise ValueError(f"data.color: expected shape ({total}, C), one row per vertex, got {tuple(color.shape)}")
    if isinstance(data, Batch) and data.num_graphs > 1:
        return _split_batch(pos, faces, color, data)
    colors = None if color is None else color.unsqueeze(0)  # (1, V, C)
    return PyGMeshes(pos.unsqueeze(0), faces.contiguous(), colors)  # (1, V, 3), (F, 3)


def _same_count(counts: torch.Tensor, what: str) -> int:
    """The count every graph has (``counts`` ``(N,)``), or ``ValueError`` naming the first graph that differs."""
    differ = torch.nonzero(counts != counts[0])
    if differ.numel():
        i = int(differ[0])
        raise ValueError(f"data: expected graphs with the same number of {what}, graph {i} has {int(counts[i])} "
                         f"{what} and graph 0 has {int(counts[0])}")
    return int(counts[0])


def _split_batch(pos: torch.Tensor, faces: torch.Tensor, color: torch.Tensor | None, data: Any) -> PyGMeshes:
    """A ``Batch`` of ``N`` graphs, ``faces`` ``(N*F, 3)`` -> ``(N, V, 3)`` vertices and the shared ``(F, 3)`` faces."""
    face = faces.t()  # (3, N*F)
    N = int(data.num_graphs)
    ptr = data.ptr.to(pos.device)  # (N + 1,) first vertex of each graph
    V = _same_count(ptr.diff(), "vertices")
    owner = data.batch.to(pos.device)[face[0]]  # (N*F,) the graph of each face
    F = _same_count(torch.bincount(owner, minlength=N), "faces")
    if bool((owner.diff() < 0).any()):
        raise ValueError("data.face: expected the faces grouped by graph, as Batch.from_data_list stacks them")
    local = face.reshape(3, N, F) - ptr[:N].view(1, N, 1)  # (3, N, F) indices within each graph
    as_faces(local[:, 0].t(), V, pos.device, "data.face of graph 0 (within the graph)")
    mismatch = (local != local[:, :1]).any(dim=0).any(dim=1)  # (N,)
    if bool(mismatch.any()):
        i = int(torch.nonzero(mismatch)[0])
        raise ValueError(f"data: expected graphs with the same faces (one template), graph {i}'s faces differ "
                         "from graph 0's")
    vertices = pos.reshape(N, V, 3)  # (N, V, 3)
    colors = None if color is None else color.reshape(N, V, -1)  # (N, V, C)
    return PyGMeshes(vertices, local[:, 0].t().contiguous(), colors)  # faces (F, 3)


def mesh_to_pyg(mesh: Mesh, dtype: torch.dtype = torch.float32):
    """A :class:`~mesh_decoder.mesh.Mesh` as a PyG ``Data``: ``pos`` ``(V, 3)`` in ``dtype``
    (default float32), ``face`` ``(3, F)`` int64 and, with colours, ``color`` ``(V, 3)``."""
    if not isinstance(mesh, Mesh):
        raise TypeError(f"mesh: expected a mesh_decoder.mesh.Mesh, got {type(mesh).__name__}")
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype: expected a floating torch.dtype, got {dtype!r}")
    vertices = torch.from_numpy(mesh.vertices).to(dtype)  # (V, 3)
    colors = None if mesh.colors is None else torch.from_numpy(mesh.colors).to(dtype)  # (V, 3)
    return to_pyg(vertices, mesh.faces, colors)


def mesh_from_pyg(data: Any) -> Mesh:
    """One mesh graph (a ``Data``, or a ``Batch`` of one) as a validated
    :class:`~mesh_decoder.mesh.Mesh` (float64 vertices; ``color`` with 3 channels
    becomes its colours)."""
    meshes = from_pyg(data)
    if meshes.vertices.shape[0] != 1:
        raise ValueError(f"data: expected one mesh graph, got a batch of {meshes.vertices.shape[0]} "
                         "(use from_pyg for a batch)")
    colors = None
    if meshes.colors is not None:
        if meshes.colors.shape[-1] != 3:
            raise ValueError(f"data.color: expected 3 channels (RGB) for a Mesh, got {meshes.colors.shape[-1]}")
        colors = meshes.colors[0].detach().cpu().double().numpy()
    vertices = meshes.vertices[0].detach().cpu().double().numpy()  # (V, 3)
    return Mesh(vertices, meshes.faces.cpu().numpy(), colors=colors).validate()
