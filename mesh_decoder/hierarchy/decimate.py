"""Mesh decimation by quadric-error edge collapses (OpenMesh's decimater).

One level of a hierarchy is the previous level decimated to ``ceil(V / factor)``
vertices, as in COMA (Ranjan et al., "Generating 3D faces using Convolutional
Mesh Autoencoders", ECCV 2018), which decimates with the quadric error metric of
Garland & Heckbert ("Surface Simplification Using Quadric Error Metrics",
SIGGRAPH 1997). OpenMesh's decimater performs *half-edge* collapses: a collapsed
vertex is removed and the surviving vertex keeps its position, so every coarse
vertex is one of the fine vertices (the down-sampling operator is an index).

The collapses are ranked by the quadric module and constrained by two binary
modules: normal flipping (no collapse may turn a face by more than
``max_normal_deviation`` degrees; the quadric alone flips hundreds of faces on
flat regions) and aspect ratio (no collapse may create a sliver, which on a
planar region would otherwise reach zero area). If the aspect-ratio guard blocks
the decimater before it reaches the target, it is relaxed in stages and finally
dropped. The result is then checked against the fine surface (no flipped and no
degenerate faces); on failure the level is redone with a stricter normal
deviation. If every limit fails (on very coarse levels, a dozen vertices or so,
the cumulative drift of many collapses can turn one face over), the level is
redone with the limit relaxed in steps, coarse ones and then fine ones: the
strictest limit first, and each looser one only where the stricter one stalled
(not where the loosest limit alone stalled: no schedule lifts a topology limit).
If that fails too, a :class:`HierarchyError` is raised.
OpenMesh works on a copy of the mesh centred on its bounding box and scaled into
``[-1, 1]``, so the result does not depend on the units or the placement of the
mesh beyond rounding (raw quadric errors grow with the fourth power of the scale,
which stalls the decimater on large coordinates, and lose precision far from the
origin).

``openmesh`` is imported inside :func:`decimate_mesh` only, so that loading and
using a saved hierarchy never needs it.
"""

from __future__ import annotations

import math
import numbers
from typing import NamedTuple, Sequence

import numpy as np

from .._checks import check_int
from ..errors import HierarchyError, MeshValidationError

__all__ = [
    "Decimation",
    "decimate_mesh",
    "level_sizes",
    "check_manifold",
    "vertex_normals",
    "face_normals",
    "flipped_faces",
    "degenerate_faces",
]

#: Stages of the aspect-ratio guard (OpenMesh's ``ModAspectRatio``: a collapse is
#: illegal if it leaves a face with ``|e1 x e2| / l_max^2 < 1 / ratio``); ``None``
#: runs without the guard. The next stage runs only if the previous one stalled.
_ASPECT_RATIO_STAGES: tuple[float | None, ...] = (10.0, 50.0, None)

#: Normal-flipping limits (degrees) tried in turn when a level fails the checks.
_NORMAL_DEVIATIONS: tuple[float, ...] = (90.0, 45.0, 15.0)

#: The schedules of limits tried in turn: each limit alone, then the limit relaxed in
#: steps (each step runs on where the stricter one stalled), coarse steps first, then
#: fine ones. The first schedule that reaches the target without a flipped or degenerate
#: face wins, so a level that an earlier schedule builds never depends on a later one.
_SCHEDULES: tuple[tuple[float, ...], ...] = tuple((d,) for d in _NORMAL_DEVIATIONS) + (
    (15.0, 45.0, 90.0),
    (15.0, 22.5, 30.0, 37.5, 45.0, 60.0, 75.0, 90.0),
)

#: A face is degenerate if ``|e1 x e2| <= _DEGENERATE_RTOL * l_max^2``.
_DEGENERATE_RTOL = 1e-10


class Decimation(NamedTuple):
    """Result of :func:`decimate_mesh`.

    Attributes:
        vertices: ``(V_c, 3)`` float64 coarse positions, exactly ``fine[kept]``.
        faces: ``(F_c, 3)`` int64 coarse faces indexing ``vertices``, wound as the fine mesh.
        kept: ``(V_c,)`` int64 increasing indices of the kept vertices in the fine mesh.
    """

    vertices: np.ndarray
    faces: np.ndarray
    kept: np.ndarray


def _import_openmesh():
    try:
        import openmesh
    except ImportError as err:  # pragma: no cover - openmesh is a core dependency
        raise ImportError(
            "decimating a mesh needs openmesh, which is not importable "
            f"({err}); install it with `pip install openmesh`. Loading a saved "
            "hierarchy does not need it."
        ) from err
    return openmesh


def level_sizes(num_vertices: int, factors: Sequence[float]) -> list[int]:
    """Vertex counts of the levels: ``V_0 = num_vertices``, ``V_{l+1} = ceil(V_l / f_l)``.

    Args:
        num_vertices: vertices of the template.
        factors: one down-sampling factor (a real number > 1) per level below the template.

    Returns:
        ``len(factors) + 1`` sizes, e.g. ``[5023, 1256, 314, 79, 20]`` for ``(4, 4, 4, 4)``.

    Raises:
        TypeError: ``num_vertices`` is not an int, or a factor is not a real number.
        ValueError: ``num_vertices`` is below 1.
        HierarchyError: a factor is not > 1 or finite, or a level would have fewer than 4 vertices.
    """
    if isinstance(factors, (str, bytes)) or not isinstance(factors, Sequence):
        raise TypeError(f"factors: expected a sequence of numbers, got {type(factors).__name__}")
    sizes = [check_int(num_vertices, "num_vertices", minimum=1)]
    for i, f in enumerate(factors):
        if isinstance(f, bool) or not isinstance(f, numbers.Real):
            raise TypeError(f"factors[{i}]: expected a real number > 1, got {type(f).__name__} {f!r}")
        if not math.isfinite(f) or f <= 1:
            raise HierarchyError(f"factors[{i}]: expected a finite down-sampling factor > 1, got {f!r}")
        prev = sizes[-1]
        nxt = -(-prev // int(f)) if float(f).is_integer() else math.ceil(prev / float(f))
        if nxt < 4:
            raise HierarchyError(
                f"factors {tuple(factors)} leave {nxt} {'vertex' if nxt == 1 else 'vertices'} at level {i + 1} "
                f"(sizes {sizes + [nxt]}); every level needs at least 4 vertices"
            )
        sizes.append(nxt)
    return sizes


def check_manifold(vertices: np.ndarray, faces: np.ndarray) -> None:
    """Raise :class:`MeshValidationError` unless every vertex is a manifold vertex.

    Complements :meth:`Mesh.validate` (which checks edges and winding): every
    vertex must be used by at least one face, and the faces around a vertex must
    form a single fan (faces connected through edges incident to the vertex).
    A "bowtie" vertex where two fans touch has two fans.

    Args:
        vertices: ``(V, 3)`` positions (only the count is used).
        faces: ``(F, 3)`` int64 faces with every edge shared by at most 2 faces.

    Raises:
        MeshValidationError: naming the first offending vertex and the count (or bad
            face shapes, dtypes or indices).
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    V = int(np.asarray(vertices).shape[0])
    faces = np.asarray(faces)
    if faces.ndim != 2 or faces.shape[1] != 3:
        raise MeshValidationError(f"faces: expected shape (F, 3), got {faces.shape}")
    if faces.size and not np.issubdtype(faces.dtype, np.integer):
        raise MeshValidationError(f"faces: expected integer indices, got dtype {faces.dtype}")
    faces = faces.astype(np.int64, copy=False)
    if faces.size and (faces.min() < 0 or faces.max() >= V):
        raise MeshValidationError(f"faces: expected indices in [0, {V}), got [{faces.min()}, {faces.max()}]")
    F = faces.shape[0]
    corner_vertex = faces.reshape(-1)  # (3F,) vertex of corner 3f+k
    used = np.bincount(corner_vertex, minlength=V)
    unused = np.flatnonzero(used == 0)
    if unused.size:
        raise MeshValidationError(
            f"vertex {int(unused[0])} is not used by any face ({unused.size} unreferenced vertices); "
            "expected every vertex to belong to a face (remove isolated vertices first)"
        )
    # Half-edge (f, k) joins corner 3f+k to corner 3f+(k+1)%3.
    start = np.arange(3 * F).reshape(F, 3)  # (F, 3) corner ids
    end = start[:, [1, 2, 0]]  # (F, 3)
    start, end = start.reshape(-1), end.reshape(-1)  # (3F,), (3F,)
    a, b = corner_vertex[start], corner_vertex[end]
    key = np.minimum(a, b) * V + np.maximum(a, b)  # (3F,) undirected edge key
    order = np.argsort(key, kind="stable")
    ks = key[order]
    pair = np.flatnonzero(ks[1:] == ks[:-1])  # positions i with order[i], order[i+1] on one edge
    h1, h2 = order[pair], order[pair + 1]
    same = corner_vertex[start[h1]] == corner_vertex[start[h2]]
    # Connect the two corners at each end of a shared edge.
    u = np.concatenate([start[h1], end[h1]])
    w = np.concatenate([np.where(same, start[h2], end[h2]), np.where(same, end[h2], start[h2])])
    graph = coo_matrix((np.ones(u.size, dtype=np.int8), (u, w)), shape=(3 * F, 3 * F))
    ncomp, label = connected_components(graph, directed=False)
    fans = np.unique(corner_vertex * np.int64(ncomp) + label)  # unique (vertex, fan) pairs
    fans_per_vertex = np.bincount(fans // ncomp, minlength=V)
    bad = np.flatnonzero(fans_per_vertex > 1)
    if bad.size:
        v = int(bad[0])
        raise MeshValidationError(
            f"non-manifold vertex {v}: its faces form {int(fans_per_vertex[v])} separate fans, "
            f"expected 1 ({bad.size} such vertices)"
        )


def face_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Unnormalised face normals ``(b - a) x (c - a)`` (length = twice the area).

    Shapes:
        vertices ``(V, 3)``, faces ``(F, 3)`` -> ``(F, 3)``.
    """
    tri = vertices[faces]  # (F, 3, 3)
    return np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])


def vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Area-weighted vertex normals: the sum of the unnormalised normals of incident faces.

    Shapes:
        vertices ``(V, 3)``, faces ``(F, 3)`` -> ``(V, 3)`` (not normalised).
    """
    V = vertices.shape[0]
    fn = face_normals(vertices, faces)  # (F, 3)
    out = np.zeros((V, 3), dtype=np.float64)
    for k in range(3):
        for c in range(3):
            out[:, c] += np.bincount(faces[:, k], weights=fn[:, c], minlength=V)
    return out


def flipped_faces(fine_vertices: np.ndarray, fine_faces: np.ndarray, coarse_faces: np.ndarray) -> np.ndarray:
    """Coarse faces whose orientation opposes the fine surface near them.

    A coarse face ``(a, b, c)`` (indices into the *fine* vertices) is flipped if
    its normal has a negative dot product with ``n_a + n_b + n_c``, the sum of the
    area-weighted vertex normals of its corners in the fine mesh.

    Shapes:
        fine_vertices ``(V, 3)``, fine_faces ``(F, 3)``, coarse_faces ``(F_c, 3)`` -> ``(K,)`` int64 face ids.
    """
    vn = vertex_normals(fine_vertices, fine_faces)  # (V, 3)
    ref = vn[coarse_faces].sum(axis=1)  # (F_c, 3)
    nc = face_normals(fine_vertices, coarse_faces)  # (F_c, 3)
    return np.flatnonzero(np.einsum("ij,ij->i", nc, ref) < 0)


def degenerate_faces(vertices: np.ndarray, faces: np.ndarray, rtol: float = _DEGENERATE_RTOL) -> np.ndarray:
    """Faces with a repeated index or (near) zero area.

    A face is degenerate if two indices are equal or ``|e1 x e2| <= rtol * l_max^2``
    with ``l_max`` its longest edge (a scale-free sliver test).

    Args:
        vertices: ``(V, 3)`` positions.
        faces: ``(F, 3)`` indices.
        rtol: relative area threshold, default ``1e-10``.

    Returns:
        ``(K,)`` int64 ids of degenerate faces.
    """
    repeated = (faces[:, 0] == faces[:, 1]) | (faces[:, 1] == faces[:, 2]) | (faces[:, 0] == faces[:, 2])
    tri = vertices[faces]  # (F, 3, 3)
    edges = tri[:, [1, 2, 0]] - tri  # (F, 3, 3)
    lmax2 = (edges**2).sum(-1).max(-1)  # (F,)
    area2 = np.linalg.norm(np.cross(edges[:, 0], -edges[:, 2]), axis=-1)  # (F,) twice the area
    return np.flatnonzero(repeated | (area2 <= rtol * lmax2))


def _collapse_once(openmesh, vertices, faces, current, target, deviation, aspect_ratio):
    """One OpenMesh decimation run on the sub-mesh ``vertices[current]``.

    ``faces`` index ``vertices`` (the original fine mesh). Returns the new
    ``current`` (fine indices of the surviving vertices, in OpenMesh's order)
    and the surviving faces as fine indices.
    """
    local = np.full(vertices.shape[0], -1, dtype=np.int64)
    local[current] = np.arange(current.size)
    mesh = openmesh.TriMesh(vertices[current], local[faces])
    if mesh.n_faces() != faces.shape[0] or mesh.n_vertices() != current.size:
        raise MeshValidationError(
            f"openmesh accepted {mesh.n_faces()} of {faces.shape[0]} faces; expected all of them "
            "(the mesh has a non-manifold vertex or edge)"
        )
    # The original index rides along as a vertex property: garbage collection reorders vertices.
    mesh.set_vertex_property_array("mesh_decoder_index", current.astype(np.float64))
    mesh.request_face_normals()
    mesh.update_face_normals()
    decimater = openmesh.TriMeshDecimater(mesh)
    quadric = openmesh.TriMeshModQuadricHandle()
    decimater.add(quadric)
    flipping = openmesh.TriMeshModNormalFlippingHandle()
    decimater.add(flipping)
    decimater.module(flipping).set_max_normal_deviation(float(deviation))
    if aspect_ratio is not None:
        aspect = openmesh.TriMeshModAspectRatioHandle()
        decimater.add(aspect)
        decimater.module(aspect).set_aspect_ratio(float(aspect_ratio))
        decimater.module(aspect).set_binary(True)
    if not decimater.initialize():
        raise HierarchyError("openmesh's decimater could not be initialised (no priority module)")
    decimater.decimate_to(int(target))
    mesh.garbage_collection()
    index = mesh.vertex_property_array("mesh_decoder_index")
    new_current = np.rint(index).astype(np.int64)  # (V',)
    if not np.array_equal(mesh.points(), vertices[new_current]):
        raise HierarchyError("openmesh moved vertices during decimation; expected half-edge collapses only")
    new_faces = new_current[np.asarray(mesh.face_vertex_indices(), dtype=np.int64)]  # (F', 3)
    return new_current, new_faces


def _run_schedule(openmesh, vertices, faces, target, schedule):
    """Decimate the mesh ``(vertices, faces)`` towards ``target`` vertices under each normal-deviation limit of
    ``schedule`` in turn (each with the aspect-ratio stages), going on from where the previous limit stalled.
    Returns ``current`` (fine indices of the surviving vertices) and the surviving faces as fine indices."""
    current, cur_faces = np.arange(vertices.shape[0], dtype=np.int64), faces
    for deviation in schedule:
        for aspect_ratio in _ASPECT_RATIO_STAGES:
            current, cur_faces = _collapse_once(
                openmesh, vertices, cur_faces, current, target, deviation, aspect_ratio
            )
            if current.size <= target:
                return current, cur_faces
    return current, cur_faces


def _where_flipped(faces: np.ndarray, flipped: np.ndarray, num_vertices: int) -> str:
    """For a mesh of several components, which ones the ``(K, 3)`` flipped coarse faces (fine indices) lie on:
    a user then knows whether the face or an eyeball stops the decimation. Empty for one component."""
    if flipped.size == 0:
        return ""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    e = faces[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2)  # (3F, 2)
    count, labels = connected_components(coo_matrix((np.ones(len(e)), (e[:, 0], e[:, 1])),
                                                    shape=(num_vertices, num_vertices)), directed=False)
    if count < 2:
        return ""
    sizes = np.bincount(labels, minlength=count)
    on = np.unique(labels[flipped[:, 0]])
    parts = ", ".join(f"{int(c)} ({int(sizes[c])} vertices)" for c in on[:3])
    return (f"; the flipped faces lie on component{'s' if on.size > 1 else ''} {parts} of the mesh's {count} "
            f"(components numbered by their lowest vertex)")


def decimate_mesh(vertices: np.ndarray, faces: np.ndarray, num_vertices: int, *, check: bool = True) -> Decimation:
    """Decimate a triangle mesh to exactly ``num_vertices`` vertices.

    OpenMesh ``TriMeshDecimater`` with the quadric module (priority), the
    normal-flipping module and an aspect-ratio guard (see the module docstring).
    Vertices are never moved, so the coarse mesh is a vertex subset of the fine
    one; its faces keep the fine mesh's counter-clockwise winding.

    Args:
        vertices: ``(V, 3)`` float positions.
        faces: ``(F, 3)`` int faces of a manifold, consistently wound mesh.
        num_vertices: target vertex count, ``1 <= num_vertices <= V``.
        check: run :func:`check_manifold` on the input first (default ``True``); pass
            ``False`` only for a mesh already checked, e.g. a previous level.

    Returns:
        :class:`Decimation` ``(vertices (V_c, 3), faces (F_c, 3), kept (V_c,))`` with
        ``vertices == fine_vertices[kept]`` exactly and ``kept`` increasing.

    Raises:
        HierarchyError: the decimater stops before the target (e.g. every component
            already minimal), or every setting leaves flipped or degenerate faces.
        MeshValidationError: a vertex is unreferenced or non-manifold.
    """
    vertices = np.ascontiguousarray(vertices, dtype=np.float64)
    faces = np.ascontiguousarray(faces, dtype=np.int64)
    if vertices.ndim != 2 or vertices.shape[1] != 3:
        raise MeshValidationError(f"vertices: expected shape (V, 3), got {vertices.shape}")
    if faces.ndim != 2 or faces.shape[1] != 3:
        raise MeshValidationError(f"faces: expected shape (F, 3), got {faces.shape}")
    V = vertices.shape[0]
    if isinstance(num_vertices, bool) or not isinstance(num_vertices, numbers.Integral):
        raise TypeError(f"num_vertices: expected an int, got {type(num_vertices).__name__}")
    if not 1 <= num_vertices <= V:
        raise HierarchyError(f"num_vertices: expected a target in [1, {V}], got {num_vertices}")
    if not np.isfinite(vertices).all():
        raise MeshValidationError("vertices: expected finite values, got NaN or infinity")
    if faces.size and (faces.min() < 0 or faces.max() >= V):
        raise MeshValidationError(f"faces: expected indices in [0, {V}), got [{faces.min()}, {faces.max()}]")
    if check:
        check_manifold(vertices, faces)
    if num_vertices == V:
        return Decimation(vertices.copy(), faces.copy(), np.arange(V, dtype=np.int64))

    openmesh = _import_openmesh()
    # OpenMesh ranks collapses by quadric errors (squared distances times areas): on raw
    # coordinates they stall the decimater for large meshes (a grid scaled by 2**40 stopped
    # at once) and lose precision far from the origin. Decimate a copy centred on its
    # bounding box and scaled into [-1, 1]; only the kept indices are used, positions
    # come from `vertices`.
    low, high = vertices.min(axis=0), vertices.max(axis=0)
    half = float((high / 2 - low / 2).max())  # halves first: no overflow near the float64 limit
    work = (vertices - (low / 2 + high / 2)) / (half if half > 0 else 1.0)
    failures: dict[str, list[str]] = {}  # outcome -> the settings that ended so, in the order tried
    last_flipped = np.zeros((0, 3), dtype=np.int64)  # the last checked setting's flipped coarse faces
    stalled = False
    for schedule in _SCHEDULES:
        if stalled and len(schedule) == 1:
            continue  # a stricter limit alone only stops earlier
        current, cur_faces = _run_schedule(openmesh, work, faces, num_vertices, schedule)
        setting = (f"{schedule[0]:g} deg" if len(schedule) == 1 else
                   f"{schedule[0]:g} to {schedule[-1]:g} deg in {len(schedule) - 1} steps")
        if current.size != num_vertices:
            failures.setdefault(f"the decimater stopped at {current.size} vertices, expected {num_vertices}",
                                []).append(setting)
            if schedule == _SCHEDULES[0]:
                break  # the loosest limit alone stalled: a topology limit, which no schedule lifts
            stalled = True
            continue
        flipped = flipped_faces(work, faces, cur_faces)  # both tests are scale-free: `work` keeps them in range
        last_flipped = cur_faces[flipped]
        degenerate = degenerate_faces(work, cur_faces)
        if flipped.size == 0 and degenerate.size == 0:
            break
        failures.setdefault(f"{flipped.size} flipped and {degenerate.size} degenerate faces", []).append(setting)
    else:
        current = None
    if current is None or current.size != num_vertices:
        given = degenerate_faces(work, faces)  # (K,) zero-area faces of the input itself: no factor avoids them
        if given.size:
            f = int(given[0])
            cause = (f"the mesh itself has {given.size} face{'s' if given.size > 1 else ''} of (near) zero area "
                     f"(first: face {f}, vertices {faces[f].tolist()}, 0-based), which no decimation removes: "
                     "move their vertices apart or remove those faces")
        else:
            cause = ("the mesh's topology (components, holes, genus) or its coarseness limits the "
                     f"simplification{_where_flipped(faces, last_flipped, V)}: use smaller factors or fewer "
                     "levels")
        tried = "; ".join(f"max normal deviation {', '.join(settings)}: {outcome}"
                          for outcome, settings in failures.items())
        raise HierarchyError(
            f"cannot decimate {V} -> {num_vertices} vertices without flipped or degenerate faces ({tried}); {cause}"
        )

    order = np.argsort(current, kind="stable")
    kept = current[order]  # (V_c,) increasing fine indices
    relabel = np.full(V, -1, dtype=np.int64)
    relabel[kept] = np.arange(kept.size)
    return Decimation(vertices[kept], relabel[cur_faces], kept)
