"""The mesh container: plain numpy arrays with a schema and a validator."""

from __future__ import annotations

import hashlib
import operator
from dataclasses import dataclass, field, replace
from typing import Mapping

import numpy as np

from ..errors import MeshValidationError

__all__ = ["Mesh"]


def _as_array(value, name: str, dtype, cols: int | None) -> np.ndarray:
    try:
        arr = np.asarray(value)
    except ValueError as exc:  # ragged nested lists
        raise MeshValidationError(f"{name}: expected a rectangular numeric array, got {type(value).__name__}: {exc}") from None
    except (TypeError, RuntimeError) as exc:  # e.g. a CUDA tensor or one that requires grad
        raise TypeError(f"{name}: expected a numpy array (or array-like), got {type(value).__name__}: {exc}") from None
    if arr.dtype.kind not in "iuf":  # complex would lose its imaginary part, text would be parsed
        raise MeshValidationError(f"{name}: expected a numeric array (integers or floats), got dtype {arr.dtype}")
    if np.issubdtype(dtype, np.integer) and arr.size and not np.issubdtype(arr.dtype, np.integer):
        if not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)):
            raise MeshValidationError(f"{name}: expected integer indices, got non-integer values")
    if np.issubdtype(dtype, np.integer) and arr.dtype == np.uint64 and arr.size and arr.max() > np.iinfo(dtype).max:
        raise MeshValidationError(f"{name}: expected indices below 2**63, got {int(arr.max())} (uint64 values that "
                                  "int64 cannot hold)")
    arr = np.ascontiguousarray(arr, dtype=dtype)
    if cols is not None and (arr.ndim != 2 or arr.shape[1] != cols):
        raise MeshValidationError(f"{name}: expected shape (N, {cols}), got {arr.shape}")
    return arr


@dataclass(eq=False)
class Mesh:
    """A triangle mesh with optional UVs, per-vertex colours and landmarks.

    Attributes:
        vertices: ``(V, 3)`` float64 positions (millimetres for the built-in faces).
        faces: ``(F, 3)`` int64 vertex indices, counter-clockwise seen from outside.
        uv: ``(T, 2)`` float64 texture coordinates, ``v`` measured from the bottom
            as in OBJ, or ``None``.
        uv_faces: ``(F, 3)`` int64 indices into ``uv``, one per face corner, or ``None``.
            Per-corner UVs let a seam vertex carry two UVs without splitting it.
        colors: ``(V, 3)`` float64 RGB in ``[0, 1]``, or ``None``.
        landmarks: name -> vertex index (``None``: no landmarks).

    The constructor, and every later assignment to a field, converts dtypes and
    checks shapes; :meth:`validate` checks the fields against each other,
    topology and values. Arrays that already have the schema's dtype and are
    contiguous are used as given, not copied (use :meth:`copy` for a deep copy).
    """

    vertices: np.ndarray
    faces: np.ndarray
    uv: np.ndarray | None = None
    uv_faces: np.ndarray | None = None
    colors: np.ndarray | None = None
    landmarks: Mapping[str, int] = field(default_factory=dict)

    def __setattr__(self, name: str, value) -> None:
        # Every assignment, in the constructor or later, converts to the schema's dtype and
        # checks the shape, so validate() and the writers never see int32 faces (whose index
        # keys would wrap) or a 1-D array. Checks between fields are in _check_layout.
        if name in _SCHEMA:
            dtype, cols, optional = _SCHEMA[name]
            if not (optional and value is None):
                value = _as_array(value, name, dtype, cols)
        elif name == "landmarks":
            value = _landmark_dict(value)
        object.__setattr__(self, name, value)

    def __post_init__(self) -> None:
        self._check_layout()

    def _check_layout(self) -> None:
        """Checks between fields: UVs both or neither, one ``uv_faces`` row per face, one colour per vertex."""
        if (self.uv is None) != (self.uv_faces is None):
            raise MeshValidationError("uv and uv_faces: expected both or neither, got only one")
        if self.uv_faces is not None and self.uv_faces.shape[0] != self.faces.shape[0]:
            raise MeshValidationError(
                f"uv_faces: expected {self.faces.shape[0]} rows (one per face), got {self.uv_faces.shape[0]}"
            )
        if self.colors is not None and self.colors.shape[0] != self.vertices.shape[0]:
            raise MeshValidationError(
                f"colors: expected {self.vertices.shape[0]} rows (one per vertex), got {self.colors.shape[0]}"
            )

    # ------------------------------------------------------------------ basics
    @property
    def num_vertices(self) -> int:
        return int(self.vertices.shape[0])

    @property
    def num_faces(self) -> int:
        return int(self.faces.shape[0])

    def copy(self, **changes) -> "Mesh":
        """A deep copy, with the given fields replaced."""
        out = replace(
            self,
            vertices=self.vertices.copy(),
            faces=self.faces.copy(),
            uv=None if self.uv is None else self.uv.copy(),
            uv_faces=None if self.uv_faces is None else self.uv_faces.copy(),
            colors=None if self.colors is None else self.colors.copy(),
            landmarks=dict(self.landmarks),
        )
        return replace(out, **changes) if changes else out

    def __repr__(self) -> str:
        extras = [n for n in ("uv", "colors") if getattr(self, n) is not None]
        if self.landmarks:
            extras.append(f"{len(self.landmarks)} landmarks")
        tail = (", " + ", ".join(extras)) if extras else ""
        return f"Mesh(V={self.num_vertices}, F={self.num_faces}{tail})"

    # ---------------------------------------------------------------- topology
    def edges(self) -> np.ndarray:
        """Unique undirected edges ``(E, 2)`` with ``e[:, 0] < e[:, 1]``, sorted."""
        e = self.faces[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2)
        e = np.sort(e, axis=1)
        return np.unique(e, axis=0)

    def boundary_edges(self) -> np.ndarray:
        """Directed boundary half-edges ``(B, 2)``: edges used by exactly one face."""
        he = self.faces[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2)
        key = np.sort(he, axis=1)
        _, inverse, counts = np.unique(key, axis=0, return_inverse=True, return_counts=True)
        return he[counts[inverse.ravel()] == 1]

    def boundary_vertices(self) -> np.ndarray:
        """Sorted indices of vertices on a boundary edge."""
        return np.unique(self.boundary_edges())

    def coincident_vertices(self) -> np.ndarray:
        """Sorted indices ``(K,)`` of vertices that share their exact position with another vertex.

        An unwelded seam (a file that splits vertices along UV seams) gives such pairs: the
        two sides are then separate components that no convolution crosses.
        """
        _, inverse, counts = np.unique(self.vertices, axis=0, return_inverse=True, return_counts=True)
        return np.flatnonzero(counts[inverse.ravel()] > 1)

    def components(self) -> np.ndarray:
        """Connected component of each vertex ``(V,)``, numbered from 0 (a vertex in no face is one alone)."""
        from scipy.sparse import coo_matrix
        from scipy.sparse.csgraph import connected_components

        e = self.edges()  # (E, 2)
        graph = coo_matrix((np.ones(e.shape[0]), (e[:, 0], e[:, 1])), shape=(self.num_vertices,) * 2)
        return connected_components(graph, directed=False)[1].astype(np.int64)

    def content_hash(self) -> str:
        """SHA-256 of faces and positions rounded to float32.

        A template saved to any supported format and reloaded keeps its hash.
        """
        h = hashlib.sha256()
        h.update(b"mesh_decoder.Mesh/v1")
        h.update(np.asarray(self.vertices.shape, dtype="<i8").tobytes())
        with np.errstate(over="ignore"):  # beyond float32 hashes as inf; validation is not this method's job
            h.update(np.ascontiguousarray(self.vertices, dtype="<f4").tobytes())
        h.update(np.asarray(self.faces.shape, dtype="<i8").tobytes())
        h.update(np.ascontiguousarray(self.faces, dtype="<i8").tobytes())
        return h.hexdigest()

    def uv_hash(self) -> str | None:
        """SHA-256 of the UV of every face corner (``uv[uv_faces]`` rounded to float32), or ``None``
        without UVs.

        :meth:`content_hash` covers the geometry only; a texel map depends on this too.
        It is the layout's, whatever the order or sharing of the ``uv`` table: a PLY
        keeps UVs per corner and reads them back merged by value in another order,
        with the same hash.
        """
        if self.uv is None:
            return None
        with np.errstate(over="ignore"):
            table = np.asarray(self.uv, dtype="<f4")
        corners = np.take(table, np.asarray(self.uv_faces, dtype=np.int64), axis=0, mode="clip")  # (F, 3, 2)
        h = hashlib.sha256()
        h.update(b"mesh_decoder.Mesh.uv/v2")
        h.update(np.asarray(corners.shape, dtype="<i8").tobytes())
        h.update(np.ascontiguousarray(corners).tobytes())
        return h.hexdigest()

    def uv_table_hash(self) -> str | None:
        """The hash :meth:`uv_hash` was before it hashed per-corner UVs (of the ``uv`` table and
        ``uv_faces`` as they are): hierarchies saved then record it as their ``uv_hash``."""
        if self.uv is None:
            return None
        h = hashlib.sha256()
        h.update(b"mesh_decoder.Mesh.uv/v1")
        for a, dtype in ((self.uv, "<f4"), (self.uv_faces, "<i8")):
            h.update(np.asarray(a.shape, dtype="<i8").tobytes())
            with np.errstate(over="ignore"):
                h.update(np.ascontiguousarray(a, dtype=dtype).tobytes())
        return h.hexdigest()

    # -------------------------------------------------------------- validation
    def validate(self, topology: bool = True) -> "Mesh":
        """Check values and topology; return ``self`` or raise :class:`MeshValidationError`.

        Checks: the fields' row counts agree (also after assignments); finite
        positions, UVs and colours; colours in ``[0, 1]``; face indices in range;
        landmark names are strings and their indices integers in range; with
        ``topology`` (default): no degenerate faces (a repeated index); no duplicate
        faces (same vertex set); every edge used by at most two faces (non-manifold
        edges named by their vertex ids); consistent winding (no directed edge used
        twice). ``topology=False`` suits a raw scan, read for its points.
        """
        self._check_layout()
        V = self.num_vertices
        if V == 0 or self.num_faces == 0:
            raise MeshValidationError(f"expected at least one vertex and one face, got V={V}, F={self.num_faces}")
        _check_finite(self.vertices, "vertices")
        f = self.faces
        bad = np.flatnonzero(((f < 0) | (f >= V)).any(axis=1))
        if bad.size:
            i = int(bad[0])
            raise MeshValidationError(
                f"face {i} has vertex index out of range [0, {V}): {f[i].tolist()} ({bad.size} such faces)"
            )
        if topology:
            _check_topology(f, V)
        if self.uv is not None:
            _check_finite(self.uv, "uv")
            T = self.uv.shape[0]
            if self.uv_faces.size and (self.uv_faces.min() < 0 or self.uv_faces.max() >= T):
                raise MeshValidationError(
                    f"uv_faces: expected indices in [0, {T}), got range "
                    f"[{int(self.uv_faces.min())}, {int(self.uv_faces.max())}]"
                )
        if self.colors is not None:
            _check_finite(self.colors, "colors")
            if ((self.colors < 0) | (self.colors > 1)).any():  # 0-255 colours trained silently 255x too bright
                c = self.colors
                eight_bit = c.min() >= 0 and c.max() <= 255 and (c == np.round(c)).all()
                hint = " (8-bit colours? divide them by 255)" if eight_bit else ""
                raise MeshValidationError(f"colors: expected RGB values in [0, 1], got range "
                                          f"[{c.min():g}, {c.max():g}]{hint}")
        for name, idx in self.landmarks.items():  # the dict may have been edited in place
            if not isinstance(name, str):
                raise MeshValidationError(f"landmark names: expected strings, got {name!r} ({type(name).__name__})")
            idx = _landmark_index(name, idx)
            if not 0 <= idx < V:
                raise MeshValidationError(f"landmark {name!r}: expected a vertex index in [0, {V}), got {idx}")
        return self


#: field -> (dtype, columns, may be None)
_SCHEMA = {
    "vertices": (np.float64, 3, False),
    "faces": (np.int64, 3, False),
    "uv": (np.float64, 2, True),
    "uv_faces": (np.int64, 3, True),
    "colors": (np.float64, 3, True),
}


def _landmark_dict(value) -> dict[str, int]:
    """Landmarks as a new ``{str: int}`` dict; ``None`` is no landmarks."""
    if value is None:
        return {}
    try:
        pairs = dict(value)
    except (TypeError, ValueError):
        raise MeshValidationError(
            f"landmarks: expected a mapping name -> vertex index, got {type(value).__name__}"
        ) from None
    return {str(k): _landmark_index(str(k), v) for k, v in pairs.items()}


def _landmark_index(name: str, value) -> int:
    """A landmark's vertex index as an int; integers only (no bools, no floats)."""
    try:
        if isinstance(value, (bool, np.bool_)):
            raise TypeError
        return operator.index(value)
    except TypeError:
        raise MeshValidationError(
            f"landmark {name!r}: expected an integer vertex index, got {value!r} ({type(value).__name__})"
        ) from None


def _check_topology(f: np.ndarray, V: int) -> None:
    """:meth:`Mesh.validate`'s topology checks of faces ``(F, 3)`` (in range) on ``V`` vertices."""
    degenerate = np.flatnonzero((f[:, 0] == f[:, 1]) | (f[:, 1] == f[:, 2]) | (f[:, 0] == f[:, 2]))
    if degenerate.size:
        i = int(degenerate[0])
        raise MeshValidationError(
            f"face {i} is degenerate (repeated vertex): {f[i].tolist()} ({degenerate.size} such faces)"
        )
    # Faces and edges are compared through 1-D int64 keys (much faster than unique rows);
    # the face key needs V**3 < 2**63, larger meshes compare sorted rows instead.
    sorted_faces = np.sort(f, axis=1)
    if V**3 < 2**63:  # the largest key, V**3 - 1, fits in int64
        face_key = (sorted_faces[:, 0] * V + sorted_faces[:, 1]) * V + sorted_faces[:, 2]
        _, first, counts = np.unique(face_key, return_index=True, return_counts=True)
    else:
        _, first, counts = np.unique(sorted_faces, axis=0, return_index=True, return_counts=True)
    if (counts > 1).any():
        j = int(first[np.flatnonzero(counts > 1)[0]])
        raise MeshValidationError(
            f"face {j} {f[j].tolist()} is duplicated ({int((counts > 1).sum())} duplicated vertex sets)"
        )
    he = f[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2)
    und_key = np.minimum(he[:, 0], he[:, 1]) * V + np.maximum(he[:, 0], he[:, 1])
    uniq, cnt = np.unique(und_key, return_counts=True)
    if (cnt > 2).any():
        e = int(np.flatnonzero(cnt > 2)[0])
        k = int(uniq[e])
        raise MeshValidationError(
            f"non-manifold edge ({k // V}, {k % V}) is shared by {int(cnt[e])} faces, "
            f"expected at most 2 ({int((cnt > 2).sum())} such edges)"
        )
    dir_key = he[:, 0] * V + he[:, 1]
    duh, dcnt = np.unique(dir_key, return_counts=True)
    if (dcnt > 1).any():
        k = int(duh[np.flatnonzero(dcnt > 1)[0]])
        faces_of = np.flatnonzero(dir_key == k) // 3
        raise MeshValidationError(
            f"inconsistent winding: faces {faces_of.tolist()} both traverse edge "
            f"({k // V} -> {k % V}) in the same direction"
        )


def _check_finite(arr: np.ndarray, name: str) -> None:
    bad = ~np.isfinite(arr)
    if bad.any():
        row = int(np.flatnonzero(bad.any(axis=-1))[0])
        raise MeshValidationError(f"{name}: expected finite values, got {arr[row].tolist()} at row {row}")
