"""Spiral vertex sequences for spiral convolutions.

Spiral convolutions (Lim et al., "A Simple Approach to Intrinsic Correspondence
Learning on Unstructured 3D Meshes", ECCV-W 2018; Bouritsas et al., "Neural 3D
Morphable Models: Spiral Convolutional Networks for 3D Shape Representation
Learning and Generation", ICCV 2019; Gong et al., "SpiralNet++: A Fast and Highly
Efficient Mesh Convolution Operator", ICCV-W 2019) gather, for every vertex, a fixed
length sequence of vertices that starts at the vertex and winds outward ring by ring.
The sequence is ordered, so a single dense layer over the concatenated features
acts like an anisotropic filter.

The spirals are computed from the half-edge topology only (positions are never
used), with numpy arrays instead of a per-vertex Python walk: on one CPU core a
5,023-vertex face takes well under 0.1 s and 100k vertices about a second.

**The ordering rule.** Let ``N(u)`` be the one-ring of ``u`` in *fan order*:

* a vertex whose faces close around it (interior vertex) lists its neighbours in the
  mesh's winding direction (for a face ``(u, a, b)``, ``b`` follows ``a``), starting
  at its neighbour with the smallest index;
* a boundary vertex lists its neighbours in the winding direction starting at the
  boundary neighbour ``a`` whose edge ``u -> a`` is a boundary half-edge, so that the
  walk covers the whole fan and ends at the other boundary neighbour;
* a non-manifold vertex (several fans meeting at one vertex) lists its fans one after
  the other, sorted by their first neighbour.

With ``ring_0 = [c]`` and ``ring_{-1} = []``, ring ``k + 1`` is built by visiting the
vertices ``u`` of ring ``k`` in order; for each, ``N(u)`` is read cyclically starting
just after the end of its first run of vertices in ring ``k - 1`` (the run's last
vertex is followed by one not in ring ``k - 1``; if ``N(u)`` has no such run, reading
starts at ``N(u)[0]``), and every vertex not yet in the spiral is appended. So ring 1
is ``N(c)``, and each later ring continues in the same rotational direction as the
one before, starting next to where that one started. Ring ``k`` holds exactly the
vertices at graph distance ``k`` from the centre.

The rule depends only on the topology: renumbering faces or rotating the corners of
a face does not change any spiral.

**Dilation** ``d`` (SpiralNet++): the undilated spiral of length ``L * d`` is built
and every ``d``-th entry is kept starting from the centre, ``spiral[0 : L*d : d]``.

**Padding.** A spiral that runs out of vertices (a component with fewer than
``L * d`` vertices) is padded with the index ``V``: a virtual "zero" vertex that
spiral layers append to their input. Spirals never leave their connected component.
"""

from __future__ import annotations

import numpy as np

from ..errors import MeshValidationError

__all__ = ["compute_spirals"]


def compute_spirals(vertices, faces, length: int, dilation: int = 1, *, chunk_size: int = 16384) -> np.ndarray:
    """Spiral indices of every vertex (SpiralNet++ ordering, see the module docstring).

    Args:
        vertices: ``(V, 3)`` positions; only ``V`` is used (spirals are topological).
        faces: ``(F, 3)`` integer vertex indices, consistently wound, every edge used
            by at most two faces.
        length: ``L``, number of entries per spiral, including the centre.
        dilation: ``d``; every ``d``-th entry of the undilated spiral of length
            ``L * d`` is kept. Default ``1``.
        chunk_size: number of centres processed together (bounds memory). Default ``16384``.

    Returns:
        ``(V, L)`` int64 array; ``out[v, 0] == v``; entries past the end of ``v``'s
        connected component are ``V``.

    Shapes:
        ``vertices (V, 3)``, ``faces (F, 3)`` -> ``(V, L)``.

    Raises:
        MeshValidationError: bad shapes, indices out of range, degenerate faces, a
            directed edge used by two faces (inconsistent winding or non-manifold edge).
        TypeError: non-integer ``faces``, ``length`` or ``dilation``.
        ValueError: ``length``, ``dilation`` or ``chunk_size`` below 1.
    """
    num_vertices, faces = _check_inputs(vertices, faces)
    for name, value in (("length", length), ("dilation", dilation), ("chunk_size", chunk_size)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise TypeError(f"{name}: expected an int, got {type(value).__name__}")
        if value < 1:
            raise ValueError(f"{name}: expected an int >= 1, got {value}")
    length, dilation = int(length), int(dilation)
    # a spiral holds each vertex of the mesh at most once: entries past the V-th are padding, not computed
    total = min(length * dilation, num_vertices)

    neighbors, degree = _one_rings(faces, num_vertices)  # (V, D), (V,)
    out = np.empty((num_vertices, total), dtype=np.int64)
    for start in range(0, num_vertices, int(chunk_size)):
        centres = np.arange(start, min(start + int(chunk_size), num_vertices), dtype=np.int64)
        out[start:start + centres.size] = _spirals_of(centres, neighbors, degree, total, num_vertices)
    kept = out[:, ::dilation][:, :length]  # (V, <= L)
    if kept.shape[1] < length:
        pad = np.full((num_vertices, length - kept.shape[1]), num_vertices, dtype=np.int64)
        kept = np.concatenate([kept, pad], axis=1)  # (V, L)
    return np.ascontiguousarray(kept)  # (V, L)


# --------------------------------------------------------------------------- inputs
def _check_inputs(vertices, faces) -> tuple[int, np.ndarray]:
    vertices = np.asarray(vertices)
    if vertices.ndim != 2 or vertices.shape[1] != 3:
        raise MeshValidationError(f"vertices: expected shape (V, 3), got {vertices.shape}")
    num_vertices = int(vertices.shape[0])
    if num_vertices == 0:
        raise MeshValidationError("vertices: expected at least one vertex, got V=0")
    faces = np.asarray(faces)
    if faces.size == 0:
        faces = faces.reshape(0, 3)
    if faces.ndim != 2 or faces.shape[1] != 3:
        raise MeshValidationError(f"faces: expected shape (F, 3), got {faces.shape}")
    if not np.issubdtype(faces.dtype, np.integer):
        raise TypeError(f"faces: expected an integer array, got dtype {faces.dtype}")
    faces = faces.astype(np.int64, copy=False)
    if faces.size:
        bad = np.flatnonzero(((faces < 0) | (faces >= num_vertices)).any(axis=1))
        if bad.size:
            i = int(bad[0])
            raise MeshValidationError(
                f"face {i} has a vertex index out of range [0, {num_vertices}): {faces[i].tolist()}"
            )
        degenerate = np.flatnonzero(
            (faces[:, 0] == faces[:, 1]) | (faces[:, 1] == faces[:, 2]) | (faces[:, 0] == faces[:, 2])
        )
        if degenerate.size:
            i = int(degenerate[0])
            raise MeshValidationError(f"face {i} is degenerate (repeated vertex): {faces[i].tolist()}")
    return num_vertices, faces


# ----------------------------------------------------------------------- one rings
def _one_rings(faces: np.ndarray, num_vertices: int) -> tuple[np.ndarray, np.ndarray]:
    """Every vertex's neighbours in fan order (module docstring).

    Each face corner is an "arc" ``(A; B -> C)``: around corner vertex ``A`` of face
    ``(A, B, C)``, neighbour ``C`` follows ``B`` in the winding direction. The arc
    that follows ``(A; B -> C)`` around ``A`` is the arc with key ``(A, C)``; fans are
    the chains and cycles of this successor map.

    Returns:
        ``neighbors (V, D)`` int64 padded with ``-1`` and ``degree (V,)`` int64.
    """
    V = num_vertices
    if faces.shape[0] == 0:
        return np.full((V, 0), -1, dtype=np.int64), np.zeros(V, dtype=np.int64)
    corner = faces.reshape(-1)  # (3F,) arc centre A
    first = faces[:, [1, 2, 0]].reshape(-1)  # (3F,) B
    second = faces[:, [2, 0, 1]].reshape(-1)  # (3F,) C
    n = corner.size

    key = corner * V + first  # (3F,) directed edge A -> B
    order = np.argsort(key, kind="stable")
    sorted_key = key[order]
    dup = np.flatnonzero(sorted_key[1:] == sorted_key[:-1])
    if dup.size:
        e0, e1 = order[dup[0]], order[dup[0] + 1]
        raise MeshValidationError(
            f"directed edge ({int(corner[e0])} -> {int(first[e0])}) is used by faces {int(e0 // 3)} and "
            f"{int(e1 // 3)}: expected a consistently wound mesh with every edge shared by at most two faces"
        )
    next_key = corner * V + second  # (3F,) key of the following arc
    pos = np.minimum(np.searchsorted(sorted_key, next_key), n - 1)
    nxt = np.where(sorted_key[pos] == next_key, order[pos], -1)  # (3F,) following arc or -1

    has_prev = np.zeros(n, dtype=bool)
    has_prev[nxt[nxt >= 0]] = True
    chain_roots = np.flatnonzero(~has_prev)  # boundary fans start here

    visited = np.zeros(n, dtype=bool)
    cur = chain_roots
    while cur.size:
        visited[cur] = True
        cur = nxt[cur]
        cur = cur[cur >= 0]

    # Closed fans: root at the arc whose B is smallest in its cycle (pointer doubling).
    rest = np.flatnonzero(~visited)
    cycle_roots = rest[:0]
    if rest.size:
        local = np.full(n, -1, dtype=np.int64)
        local[rest] = np.arange(rest.size)
        jump = local[nxt[rest]]  # (R,) every arc in a cycle has a successor
        lowest = first[rest].copy()
        max_len = int(np.bincount(corner[rest]).max())
        span = 1
        while span < max_len:
            lowest = np.minimum(lowest, lowest[jump])
            jump = jump[jump]
            span *= 2
        lowest = np.minimum(lowest, lowest[jump])
        cycle_roots = rest[first[rest] == lowest]

    roots = np.concatenate([chain_roots, cycle_roots])  # (R,)
    is_chain = np.arange(roots.size) < chain_roots.size
    rec_root, rec_step, rec_vertex = [], [], []
    alive = np.arange(roots.size)
    cur = roots.copy()
    step = 0
    while alive.size:
        rec_root.append(alive)
        rec_step.append(np.full(alive.size, step))
        rec_vertex.append(first[cur])
        following = nxt[cur]
        ends = (following < 0) & is_chain[alive]  # a boundary fan ends with its last C
        if ends.any():
            rec_root.append(alive[ends])
            rec_step.append(np.full(int(ends.sum()), step + 1))
            rec_vertex.append(second[cur[ends]])
        keep = (following >= 0) & (following != roots[alive])
        alive, cur = alive[keep], following[keep]
        step += 1
    rec_root = np.concatenate(rec_root)
    rec_step = np.concatenate(rec_step)
    rec_vertex = np.concatenate(rec_vertex)
    owner = corner[roots[rec_root]]  # (K,) vertex whose ring this entry belongs to
    fan_first = first[roots[rec_root]]  # (K,) fans of a vertex sorted by first neighbour
    order = np.lexsort((rec_step, fan_first, owner))
    owner, rec_vertex = owner[order], rec_vertex[order]

    degree = np.bincount(owner, minlength=V).astype(np.int64)  # (V,)
    offsets = np.concatenate([[0], np.cumsum(degree)])
    slot = np.arange(owner.size) - offsets[owner]
    neighbors = np.full((V, int(degree.max())), -1, dtype=np.int64)  # (V, D)
    neighbors[owner, slot] = rec_vertex
    return neighbors, degree


# ------------------------------------------------------------------- ring walking
def _first_positions(values: np.ndarray) -> np.ndarray:
    """For each entry, the column of the first entry of its row with the same value.

    Shapes: ``(m, K) -> (m, K)``.
    """
    m, k = values.shape
    if k == 0:
        return np.zeros((m, 0), dtype=np.int64)
    order = np.argsort(values, axis=1, kind="stable")  # (m, K)
    ranked = np.take_along_axis(values, order, axis=1)
    starts = np.ones((m, k), dtype=bool)
    starts[:, 1:] = ranked[:, 1:] != ranked[:, :-1]
    group_start = np.maximum.accumulate(np.where(starts, np.arange(k), 0), axis=1)  # (m, K) sorted slot
    first_col = np.take_along_axis(order, group_start, axis=1)
    out = np.empty_like(order)
    np.put_along_axis(out, order, first_col, axis=1)
    return out


def _spirals_of(centres: np.ndarray, neighbors: np.ndarray, degree: np.ndarray, total: int,
                num_vertices: int) -> np.ndarray:
    """Undilated spirals of length ``total`` for ``centres``; ``(n,) -> (n, total)``."""
    n = centres.size
    out = np.full((n, total), num_vertices, dtype=np.int64)  # (n, T) padded with V
    out[:, 0] = centres
    if total == 1:
        return out
    # Ring 1 is the centre's fan (the general step below gives the same, more slowly).
    ring = neighbors[centres]  # (n, D) padded with -1
    count = 1 + degree[centres]  # (n,)
    head = ring[:, :total - 1]
    out[:, 1:1 + head.shape[1]] = np.where(head >= 0, head, num_vertices)
    more = (count > 1) & (count < total)
    rows = np.flatnonzero(more)  # rows still growing
    prev = centres[more, None]  # ring k-1, padded with -1, (m, P)
    ring = ring[more]  # ring k, (m, R)
    while rows.size:
        m, width = ring.shape
        valid = ring >= 0
        safe = np.where(valid, ring, 0)
        deg = np.where(valid, degree[safe], 0)  # (m, R)
        dmax = int(deg.max()) if deg.size else 0
        if dmax == 0:
            break
        nb = neighbors[safe][:, :, :dmax]  # (m, R, D)
        col = np.arange(dmax)
        in_fan = col < deg[..., None]  # (m, R, D)
        period = np.maximum(deg, 1)[..., None]  # (m, R, 1)

        # Where each u's reading starts: after the end of its first run in ring k-1.
        pw = prev.shape[1]
        if pw <= 8:  # small ring k-1: compare directly
            inner = (nb[..., None] == prev[:, None, None, :]).any(axis=3) & in_fan  # (m, R, D)
        else:
            both = np.concatenate([prev, nb.reshape(m, width * dmax)], axis=1)  # (m, P + R*D)
            inner = (_first_positions(both)[:, pw:] < pw).reshape(m, width, dmax) & in_fan  # (m, R, D)
        inner_next = np.take_along_axis(inner, (col + 1) % period, axis=2)
        run_end = inner & ~inner_next
        begin = np.where(run_end.any(axis=2), run_end.argmax(axis=2) + 1, 0)  # (m, R)
        rolled = np.take_along_axis(nb, (begin[..., None] + col) % period, axis=2)  # (m, R, D)
        cand = np.where(in_fan, rolled, -1).reshape(m, width * dmax)  # (m, C)

        # Keep candidates not in rings k-1, k and not seen earlier in this row.
        old = np.concatenate([prev, ring], axis=1)  # (m, O)
        ow = old.shape[1]
        firsts = _first_positions(np.concatenate([old, cand], axis=1))[:, ow:]  # (m, C)
        keep = (firsts == np.arange(ow, ow + cand.shape[1])) & (cand >= 0)  # (m, C)
        new_count = keep.sum(axis=1)  # (m,)
        new_width = int(new_count.max()) if m else 0
        if new_width == 0:
            break
        slot = np.cumsum(keep, axis=1) - 1  # (m, C)
        r, c = np.nonzero(keep)
        new_ring = np.full((m, new_width), -1, dtype=np.int64)  # (m, R')
        new_ring[r, slot[r, c]] = cand[r, c]

        # Append to the spirals, up to `total` entries.
        dest = count[rows][:, None] + np.arange(new_width)  # (m, R')
        put = (new_ring >= 0) & (dest < total)
        rr, cc = np.nonzero(put)
        out[rows[rr], dest[rr, cc]] = new_ring[rr, cc]
        count[rows] += new_count

        more = (new_count > 0) & (count[rows] < total)
        rows, prev, ring = rows[more], ring[more], new_ring[more]
    return out
