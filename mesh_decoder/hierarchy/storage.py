"""Save, load, check and cache :class:`MeshHierarchy` files.

File format (``format_version`` 1): a ``.npz`` archive (numpy's zip of ``.npy``
files, read with ``allow_pickle=False``) holding every tensor as a plain array
under a schema name, plus one JSON document:

=====================================  ==============================================
``level{l}/vertices``                  ``(V_l, 3)`` float
``level{l}/faces``                     ``(F_l, 3)`` int64
``level{l}/spirals``                   ``(V_l, S_l)`` int64, pad index ``V_l``
``level{l}/laplacian_index``           ``(2, E_l)`` int64
``level{l}/laplacian_weight``          ``(E_l,)`` float
``level{l}/original_index``            ``(V_l,)`` int64
``down{l}``                            ``(V_{l+1},)`` int64
``up{l}/index``, ``up{l}/weight``      ``(V_l, 3)`` int64, float
``texel/index``, ``texel/weight``      ``(H, W, 3)`` int64, float (if a texel map exists)
``texel/face``, ``texel/mask``         ``(H, W)`` int64, bool
``meta_json``                          0-d unicode array: the JSON document
=====================================  ==============================================

"float" arrays keep the hierarchy's dtype: float32 unless cast with
``MeshHierarchy.to``; bfloat16, which ``.npy`` cannot hold, is refused.

The JSON document holds ``format`` (``"mesh_decoder.hierarchy"``),
``format_version``, ``num_levels``, per-level ``spiral_length``/``dilation``,
whether a texel map is present, the hierarchy's ``meta`` and ``checksum``: the
SHA-256 of every array (name, dtype, shape and bytes, in sorted name order) and
of the document itself without the checksum. Loading verifies the format
version, the keys, the checksum, the tensors' consistency (:func:`check_hierarchy`)
and optionally the template hash, and raises :class:`HierarchyError` naming the
file and the problem. Files are written atomically (temporary file, fsync,
rename), so an interrupted save leaves the previous file intact.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._atomic import atomic_write
from ..errors import HierarchyError, HierarchyNotFoundError
from ..mesh.container import Mesh
from .container import HierarchyLevel, MeshHierarchy, TexelMap
from .laplacian import coo_order_problem

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "save_hierarchy",
    "hierarchy_digest",
    "load_hierarchy",
    "check_hierarchy",
    "default_cache_dir",
    "resolve_cache_dir",
    "cache_key",
    "cache_file",
]

FORMAT_NAME = "mesh_decoder.hierarchy"
FORMAT_VERSION = 1

_LEVEL_FIELDS = ("vertices", "faces", "spirals", "laplacian_index", "laplacian_weight", "original_index")
_TEXEL_FIELDS = ("index", "weight", "face", "mask")
_WEIGHT_ATOL = 1e-4  # |sum(weights) - 1| tolerated in float32 files; more in coarser dtypes


# ----------------------------------------------------------------------------- checks
def _fail(problem: str) -> None:
    raise HierarchyError(problem)


def _check_array(t: Any, name: str, ndim: int, kind: str) -> torch.Tensor:
    """``kind``: "float", "int" (int64) or "bool"."""
    if not isinstance(t, torch.Tensor):
        _fail(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
    if t.dim() != ndim:
        _fail(f"{name}: expected {ndim} dimensions, got shape {tuple(t.shape)}")
    ok = {"float": t.is_floating_point(), "int": t.dtype == torch.int64, "bool": t.dtype == torch.bool}[kind]
    if not ok:
        want = {"float": "a floating dtype", "int": "torch.int64", "bool": "torch.bool"}[kind]
        _fail(f"{name}: expected {want}, got {t.dtype}")
    if kind == "float" and t.numel() and not torch.isfinite(t).all():
        _fail(f"{name}: expected finite values, got NaN or infinity")
    return t


def _check_shape(t: torch.Tensor, name: str, shape: tuple) -> None:
    if any(s is not None and s != n for s, n in zip(shape, t.shape)) or t.dim() != len(shape):
        pretty = "(" + ", ".join("*" if s is None else str(s) for s in shape) + ")"
        _fail(f"{name}: expected shape {pretty}, got {tuple(t.shape)}")


def _check_range(t: torch.Tensor, name: str, low: int, high: int) -> None:
    """Values in ``[low, high]`` (inclusive)."""
    if t.numel() and (int(t.min()) < low or int(t.max()) > high):
        _fail(f"{name}: expected indices in [{low}, {high}], got [{int(t.min())}, {int(t.max())}]")


def _check_weights(w: torch.Tensor, name: str) -> None:
    if w.numel() == 0:
        return
    w = w.detach()
    # rounding each of a row's weights to w.dtype moves the sum by up to half an eps each
    atol = max(_WEIGHT_ATOL, w.shape[-1] * torch.finfo(w.dtype).eps)
    if float(w.min()) < -atol:
        _fail(f"{name}: expected non-negative weights, got minimum {float(w.min()):.3g}")
    err = float((w.double().sum(-1) - 1.0).abs().max())
    if err > atol:
        _fail(f"{name}: expected weights summing to 1, got a row off by {err:.3g}")


def _first(mask: torch.Tensor) -> tuple[int, ...]:
    """Position of the first ``True`` entry of ``mask`` (row-major)."""
    return tuple(int(i) for i in mask.nonzero()[0])


def _check_spiral_centres(s: torch.Tensor, name: str) -> None:
    """Spiral ``v`` starts at ``v``: ``s[:, 0] == arange(V)``. ``s``: ``(V, S)``, ``S >= 1``."""
    bad = s[:, 0] != torch.arange(s.shape[0], device=s.device)  # (V,)
    if bad.any():
        (v,) = _first(bad)
        _fail(f"{name}: expected each spiral to start at its own vertex (spirals[:, 0] == arange({s.shape[0]})), "
              f"got spirals[{v}, 0] = {int(s[v, 0])}")


def _check_original_index(oi: torch.Tensor, want: torch.Tensor, name: str, expected: str) -> None:
    """``oi == want`` (both ``(V,)``); ``expected`` says what ``want`` is."""
    bad = oi != want  # (V,)
    if bad.any():
        (v,) = _first(bad)
        _fail(f"{name}: expected {expected}, got original_index[{v}] = {int(oi[v])} instead of {int(want[v])}")


def _check_kept_upsampling(ui: torch.Tensor, uw: torch.Tensor, d: torch.Tensor, l: int) -> None:
    """A kept vertex up-samples to itself: its weights on its own coarse copy sum to 1.

    ``ui``, ``uw``: ``(V_l, 3)``; ``d``: ``(V_{l+1},)``. Row ``d[j]`` puts weight 1 on ``j``
    (the builder writes ``(j, j, j)``; any row with all its weight on ``j`` passes).
    """
    own = ui[d] == torch.arange(d.shape[0], device=ui.device)[:, None]  # (V_{l+1}, 3)
    weight = (uw[d].double() * own).sum(1)  # (V_{l+1},)
    atol = max(_WEIGHT_ATOL, 3 * torch.finfo(uw.dtype).eps)
    bad = (weight - 1.0).abs() > atol
    if bad.any():
        (j,) = _first(bad)
        _fail(f"up_index[{l}]: expected each kept vertex to up-sample from itself, row down[{l}][j] of "
              f"up_index[{l}]/up_weight[{l}] with weight 1 on j (within {atol:.3g}), got indices "
              f"{ui[d[j]].tolist()} with weight {float(weight[j]):.17g} on j = {j} (vertex {int(d[j])} of level {l})")


def _check_laplacian(li: torch.Tensor, lw: torch.Tensor, p: str, V: int) -> None:
    """The scaled Laplacian ``-D^-1/2 A D^-1/2`` of :func:`~mesh_decoder.hierarchy.laplacian.scaled_laplacian`.

    ``li`` ``(2, E)``: entries sorted by ``(row, col)`` without repeats, no self loops
    (the zero diagonal is not stored), symmetric (every ``(i, j)`` has its ``(j, i)``);
    ``lw`` ``(E,)``: ``-1 / sqrt(deg(i) deg(j))`` with ``deg`` the row counts of ``li``, up to
    the rounding to float32 (the builder's dtype) and to ``lw``'s dtype.
    """
    if li.shape[1] == 0:
        return
    row, col = li
    loops = row == col  # (E,)
    if loops.any():
        (e,) = _first(loops)
        _fail(f"{p}.laplacian_index: expected no self loops (the zero diagonal is not stored), "
              f"got entry {e} = ({int(row[e])}, {int(col[e])})")
    problem = coo_order_problem(row, col, V)
    if problem:
        _fail(f"{p}.laplacian_index: {problem}")
    key = row * V + col  # (E,) in order
    transposed = col * V + row  # (E,)
    if not torch.equal(torch.sort(transposed).values, key):
        (e,) = _first(~torch.isin(transposed, key))
        _fail(f"{p}.laplacian_index: expected a symmetric matrix (every (i, j) with its (j, i)), "
              f"got entry {e} = ({int(row[e])}, {int(col[e])}) without ({int(col[e])}, {int(row[e])})")
    scale = torch.bincount(row, minlength=V).double().rsqrt_()  # (V,) deg^-1/2
    want = scale[row].mul_(scale[col]).neg_()  # (E,) -1/sqrt(deg(i) deg(j)), in place: E can be millions
    w = lw.detach().double()
    rtol = max(torch.finfo(torch.float32).eps, torch.finfo(lw.dtype).eps)
    off = (w - want).abs_() > want.abs().mul_(rtol)  # (E,)
    if off.any():
        (e,) = _first(off)
        found, expected = float(w[e]), float(want[e])
        _fail(f"{p}.laplacian_weight: expected -1/sqrt(deg(i) deg(j)) (the scaled Laplacian -D^-1/2 A D^-1/2, "
              f"deg from laplacian_index), got {found:.9g} instead of {expected:.9g} at entry {e} "
              f"({int(row[e])}, {int(col[e])}; relative error {abs(found / expected - 1):.2g} > {rtol:.2g})")


def _check_texel_faces(tm: TexelMap, faces: torch.Tensor) -> None:
    """``mask == (face >= 0)``; covered texels hold the vertices of their face: ``index == faces[face]``."""
    covered = tm.face >= 0  # (H, W)
    if not torch.equal(tm.mask, covered):
        i, j = _first(tm.mask != covered)
        _fail(f"texel_map.mask: expected True exactly where a face covers the texel (texel_map.face >= 0), "
              f"got mask[{i}, {j}] = {bool(tm.mask[i, j])} with face {int(tm.face[i, j])}")
    bad = (tm.index[covered] != faces[tm.face[covered]]).any(-1)  # (K,) the covered texels, row-major
    if bad.any():
        i, j = (int(x) for x in covered.nonzero()[_first(bad)[0]])
        f = int(tm.face[i, j])
        _fail(f"texel_map.index: expected the vertices of the covering face (levels[0].faces[texel_map.face]), "
              f"got {tm.index[i, j].tolist()} at texel ({i}, {j}), whose face {f} is {faces[f].tolist()}")


def check_hierarchy(h: MeshHierarchy) -> MeshHierarchy:
    """Check that a hierarchy's tensors are mutually consistent; return it or raise.

    Checks, for what :func:`~mesh_decoder.hierarchy.build.build_hierarchy` makes:

    * dtypes and shapes of every tensor, float tensors finite, spirals with
      ``spiral_length`` columns, ``spiral_length`` and ``dilation`` ints ``>= 1``;
    * index ranges: faces, Laplacian and ``original_index`` in range, spirals in
      ``[0, V]``, ``up_index`` into level ``l + 1``, texel indices and faces into level 0;
    * spirals: each starts at its own vertex, ``spirals[:, 0] == arange(V)``;
    * the scaled Laplacian: ``laplacian_index`` sorted by ``(row, col)`` without
      repeats or self loops and symmetric; ``laplacian_weight`` equal to
      ``-1 / sqrt(deg(i) deg(j))`` (``deg``: entries per row) up to float32 rounding;
    * ``original_index``: ``arange(V_0)`` at level 0 and
      ``levels[l].original_index[down[l]]`` at level ``l + 1``;
    * ``down[l]``: distinct indices with ``levels[l+1].vertices == levels[l].vertices[down[l]]``;
    * up-sampling: weights non-negative and summing to 1, and each kept vertex
      up-samples from itself alone (row ``down[l][j]`` puts weight 1 on ``j``);
    * the texel map: weights non-negative and summing to 1, ``mask == (face >= 0)``,
      and covered texels hold their face's vertices (``index == levels[0].faces[face]``).

    All checks are vectorised (no loop over vertices, edges or texels).

    Raises:
        HierarchyError: naming the first inconsistent tensor, the expected and the found value.
    """
    if not isinstance(h, MeshHierarchy):
        raise TypeError(f"expected a MeshHierarchy, got {type(h).__name__}")
    if len(h.levels) == 0:
        _fail("levels: expected at least one level, got none")
    if not isinstance(h.meta, dict):
        _fail(f"meta: expected a dict of JSON-able build parameters, got {type(h.meta).__name__}")
    L = len(h.levels) - 1
    for name in ("down", "up_index", "up_weight"):
        if len(getattr(h, name)) != L:
            _fail(f"{name}: expected {L} tensors (one per pair of levels), got {len(getattr(h, name))}")
    V0 = 0
    for l, lvl in enumerate(h.levels):
        p = f"levels[{l}]"
        v = _check_array(lvl.vertices, f"{p}.vertices", 2, "float")
        V = v.shape[0]
        V0 = V if l == 0 else V0
        _check_shape(v, f"{p}.vertices", (V, 3))
        f = _check_array(lvl.faces, f"{p}.faces", 2, "int")
        _check_shape(f, f"{p}.faces", (None, 3))
        _check_range(f, f"{p}.faces", 0, V - 1)
        for attr in ("spiral_length", "dilation"):
            value = getattr(lvl, attr)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                _fail(f"{p}.{attr}: expected an int >= 1, got {value!r}")
        s = _check_array(lvl.spirals, f"{p}.spirals", 2, "int")
        _check_shape(s, f"{p}.spirals", (V, lvl.spiral_length))
        _check_range(s, f"{p}.spirals", 0, V)
        _check_spiral_centres(s, f"{p}.spirals")
        li = _check_array(lvl.laplacian_index, f"{p}.laplacian_index", 2, "int")
        _check_shape(li, f"{p}.laplacian_index", (2, None))
        _check_range(li, f"{p}.laplacian_index", 0, V - 1)
        lw = _check_array(lvl.laplacian_weight, f"{p}.laplacian_weight", 1, "float")
        _check_shape(lw, f"{p}.laplacian_weight", (li.shape[1],))
        _check_laplacian(li, lw, p, V)
        oi = _check_array(lvl.original_index, f"{p}.original_index", 1, "int")
        _check_shape(oi, f"{p}.original_index", (V,))
        _check_range(oi, f"{p}.original_index", 0, V0 - 1)
        if l == 0:
            _check_original_index(oi, torch.arange(V, device=oi.device), f"{p}.original_index",
                                  f"arange({V}) (level 0 is the template)")
    for l in range(L):
        fine, coarse = h.levels[l], h.levels[l + 1]
        Vf, Vc = fine.num_vertices, coarse.num_vertices
        d = _check_array(h.down[l], f"down[{l}]", 1, "int")
        _check_shape(d, f"down[{l}]", (Vc,))
        _check_range(d, f"down[{l}]", 0, Vf - 1)
        if torch.unique(d).numel() != Vc:
            _fail(f"down[{l}]: expected {Vc} distinct indices, got repeated ones")
        if not torch.equal(fine.vertices[d], coarse.vertices):
            _fail(f"down[{l}]: expected levels[{l + 1}].vertices == levels[{l}].vertices[down[{l}]], got a mismatch")
        _check_original_index(coarse.original_index, fine.original_index[d], f"levels[{l + 1}].original_index",
                              f"levels[{l}].original_index[down[{l}]]")
        ui = _check_array(h.up_index[l], f"up_index[{l}]", 2, "int")
        _check_shape(ui, f"up_index[{l}]", (Vf, 3))
        _check_range(ui, f"up_index[{l}]", 0, Vc - 1)
        uw = _check_array(h.up_weight[l], f"up_weight[{l}]", 2, "float")
        _check_shape(uw, f"up_weight[{l}]", (Vf, 3))
        _check_weights(uw, f"up_weight[{l}]")
        _check_kept_upsampling(ui, uw, d, l)
    if h.texel_map is not None:
        tm = h.texel_map
        if not isinstance(tm, TexelMap):
            _fail(f"texel_map: expected a TexelMap or None, got {type(tm).__name__}")
        m = _check_array(tm.mask, "texel_map.mask", 2, "bool")
        H, W = m.shape
        ti = _check_array(tm.index, "texel_map.index", 3, "int")
        _check_shape(ti, "texel_map.index", (H, W, 3))
        _check_range(ti, "texel_map.index", 0, V0 - 1)
        tw = _check_array(tm.weight, "texel_map.weight", 3, "float")
        _check_shape(tw, "texel_map.weight", (H, W, 3))
        _check_weights(tw, "texel_map.weight")
        tf = _check_array(tm.face, "texel_map.face", 2, "int")
        _check_shape(tf, "texel_map.face", (H, W))
        _check_range(tf, "texel_map.face", -1, h.levels[0].faces.shape[0] - 1)
        _check_texel_faces(tm, h.levels[0].faces)
    return h


# ----------------------------------------------------------------------------- save
def _check_path(path: Any) -> str | os.PathLike:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path: expected a file path (str or os.PathLike), got {type(path).__name__}")
    if os.fspath(path) == "":  # Path("") is the working folder
        raise ValueError("path: expected a file path, got ''")
    return path


def _to_numpy(t: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(t.detach().cpu().numpy())


def _tensors_of(h: MeshHierarchy) -> dict[str, torch.Tensor]:
    """Every tensor of ``h`` under its file schema name."""
    tensors: dict[str, torch.Tensor] = {}
    for l, lvl in enumerate(h.levels):
        for name in _LEVEL_FIELDS:
            tensors[f"level{l}/{name}"] = getattr(lvl, name)
    for l in range(len(h.down)):
        tensors[f"down{l}"] = h.down[l]
        tensors[f"up{l}/index"] = h.up_index[l]
        tensors[f"up{l}/weight"] = h.up_weight[l]
    if h.texel_map is not None:
        for name in _TEXEL_FIELDS:
            tensors[f"texel/{name}"] = getattr(h.texel_map, name)
    return tensors


def _expected_keys(num_levels: int, texel: bool) -> set[str]:
    keys = {f"level{l}/{n}" for l in range(num_levels) for n in _LEVEL_FIELDS}
    for l in range(num_levels - 1):
        keys |= {f"down{l}", f"up{l}/index", f"up{l}/weight"}
    if texel:
        keys |= {f"texel/{n}" for n in _TEXEL_FIELDS}
    return keys


def _canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False)


def _checksum(arrays: dict[str, np.ndarray], document: dict) -> str:
    """SHA-256 over (name, dtype, shape, bytes) of every array in name order, then the document."""
    digest = hashlib.sha256()
    for name in sorted(arrays):
        arr = np.ascontiguousarray(arrays[name])
        digest.update(name.encode("utf-8") + b"\0")
        digest.update(arr.dtype.str.encode("ascii") + b"\0")
        digest.update(_canonical_json(list(arr.shape)).encode("ascii") + b"\0")
        digest.update(arr.tobytes())
    body = {k: v for k, v in document.items() if k != "checksum"}
    digest.update(_canonical_json(body).encode("utf-8"))
    return "sha256:" + digest.hexdigest()


def hierarchy_digest(h: MeshHierarchy) -> str:
    """``"sha256:..."`` of every tensor of ``h`` (names, dtypes, shapes and values; not ``meta``).

    Equal for the same operators wherever they come from (built, cached or loaded), so a run
    can tell whether a hierarchy is the one it was trained on.
    """
    return _checksum({name: _to_numpy(t) for name, t in _tensors_of(h).items()}, {})


def save_hierarchy(h: MeshHierarchy, path: str | os.PathLike) -> Path:
    """Write ``h`` to a versioned ``.npz`` file (see the module docstring), atomically.

    Args:
        h: the hierarchy; it is checked with :func:`check_hierarchy` first.
        path: the target file; its directory is created if needed.

    Returns:
        The path written.

    Raises:
        HierarchyError: ``h`` is inconsistent.
        TypeError: ``h.meta`` is not JSON-serialisable.
    """
    _check_path(path)
    check_hierarchy(h)
    tensors = _tensors_of(h)
    bf16 = sorted(name for name, t in tensors.items() if t.dtype == torch.bfloat16)
    if bf16:
        raise HierarchyError(f"{os.fspath(path)}: expected float16, float32 or float64 tensors, got bfloat16 "
                             f"({', '.join(bf16[:3])}{' ...' if len(bf16) > 3 else ''}), which .npz cannot hold; "
                             "save the hierarchy before casting it")
    arrays = {name: _to_numpy(t) for name, t in tensors.items()}
    try:
        meta = json.loads(_canonical_json(h.meta))
    except (TypeError, ValueError) as err:
        raise TypeError(f"hierarchy meta: expected JSON-serialisable values, got {err}") from err
    document = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "num_levels": len(h.levels),
        "levels": [{"spiral_length": int(l.spiral_length), "dilation": int(l.dilation)} for l in h.levels],
        "texel_map": h.texel_map is not None,
        "meta": meta,
    }
    document["checksum"] = _checksum(arrays, document)
    arrays["meta_json"] = np.array(_canonical_json(document))
    path = Path(path)
    with atomic_write(path, "wb") as handle:
        np.savez(handle, **arrays)
    return path


# ----------------------------------------------------------------------------- load
def load_hierarchy(
    path: str | os.PathLike, expected_template_hash: str | Mesh | None = None
) -> MeshHierarchy:
    """Read a hierarchy written by :func:`save_hierarchy`, verifying it.

    Needs neither openmesh nor pickle. Checks, in order: the archive is readable,
    ``meta_json`` parses and names this format and version, exactly the expected
    arrays are present, the checksum matches, the tensors are consistent
    (:func:`check_hierarchy`), and the template hash matches if given.

    Args:
        path: the ``.npz`` file.
        expected_template_hash: the :meth:`Mesh.content_hash` of the template the
            hierarchy must belong to, or the template :class:`Mesh` itself. Default
            ``None``: not checked.

    Returns:
        The :class:`MeshHierarchy` (CPU tensors).

    Raises:
        HierarchyError: ``"<path>: <problem>"`` for a missing, truncated, corrupt,
            inconsistent, other-version or other-template file; a missing one is a
            :class:`~mesh_decoder.errors.HierarchyNotFoundError`, also a ``FileNotFoundError``.
    """
    path = Path(_check_path(path))
    if not path.exists():
        raise HierarchyNotFoundError(path, "expected a saved hierarchy (.npz), found nothing at this path")
    try:
        return _load(path, expected_template_hash)
    except HierarchyError as err:
        raise HierarchyError(f"{path}: {err}") from err


def _found(value: Any) -> str:
    """A JSON value for a message: its type and a short repr."""
    text = repr(value)
    return f"{type(value).__name__} {text[:40] + '...' if len(text) > 40 else text}"


def _field(document: dict, name: str, kind: type, what: str, where: str = "meta_json") -> Any:
    """``document[name]`` if it is a ``kind`` (``bool`` is no ``int`` here), else a :class:`HierarchyError`."""
    if name not in document:
        _fail(f"{where}: expected {name!r} ({what}), got none")
    value = document[name]
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        _fail(f"{where}: expected {name!r} to be {what}, got {_found(value)}")
    return value


def _load(path: Path, expected_template_hash) -> MeshHierarchy:
    if not path.is_file():  # load_hierarchy has said when nothing is there
        _fail("not a regular file")
    try:
        with open(path, "rb") as stream:
            head = stream.read(4)
    except OSError as err:
        raise HierarchyError(f"cannot read: {type(err).__name__}: {err}") from err
    if head[:2] != b"PK":  # np.load would call anything else pickled data
        _fail(f"not a .npz archive (expected a zip file, starting with b'PK'; found {head!r})")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {}
            for name in archive.files:
                try:
                    arrays[name] = archive[name]
                except ValueError as err:  # np.load's refusal of pickled (object) members: not damage
                    if "allow_pickle" not in str(err):
                        raise
                    _fail(f"member {name!r}: expected a numeric array, found an object array (Python objects, "
                          "read only by unpickling, which is never done)")
    except HierarchyError:
        raise
    except Exception as err:  # zipfile, zlib, numpy format and OS errors alike
        raise HierarchyError(f"not a readable hierarchy archive (truncated or corrupt?): {type(err).__name__}: {err}") from err
    not_npy = sorted(name for name, value in arrays.items() if not isinstance(value, np.ndarray))
    if not_npy:  # np.load hands back the raw bytes of a member without the .npy header
        name = not_npy[0]
        _fail(f"member {name!r}: expected a .npy array, got {len(arrays[name])} bytes without the .npy header")
    raw = arrays.pop("meta_json", None)
    if raw is None:
        _fail("missing 'meta_json': not a mesh_decoder hierarchy file")
    if raw.ndim != 0 or raw.dtype.kind != "U":
        _fail(f"meta_json: expected a 0-d unicode array, got dtype {raw.dtype} shape {raw.shape}")
    try:
        document = json.loads(str(raw[()]))
    except (ValueError, RecursionError) as err:  # RecursionError: nesting deeper than the parser's stack
        raise HierarchyError(f"meta_json: expected a JSON document, got invalid JSON ({err})") from err
    if not isinstance(document, dict) or document.get("format") != FORMAT_NAME:
        found = document.get("format") if isinstance(document, dict) else type(document).__name__
        _fail(f"expected format {FORMAT_NAME!r}, got {found!r}")
    version = document.get("format_version")
    if type(version) is not int or version != FORMAT_VERSION:  # not 1.0 or true, which equal 1
        _fail(f"expected format version {FORMAT_VERSION}, got {version!r} (written by another mesh_decoder version)")
    num_levels = _field(document, "num_levels", int, "an int >= 1")
    entries = _field(document, "levels", list, "a list of {spiral_length, dilation} objects")
    level_info = []
    for l, entry in enumerate(entries):
        if not isinstance(entry, dict):
            _fail(f"meta_json: expected levels[{l}] to be a {{spiral_length, dilation}} object, got {_found(entry)}")
        level_info.append(tuple(_field(entry, name, int, "an int", f"meta_json levels[{l}]")
                                for name in ("spiral_length", "dilation")))
    has_texel = _field(document, "texel_map", bool, "true or false")
    meta = _field(document, "meta", dict, "an object")
    stored_checksum = _field(document, "checksum", str, "a string")
    if num_levels < 1:
        _fail(f"meta_json: expected 'num_levels' to be an int >= 1, got {num_levels}")
    if len(level_info) != num_levels:
        _fail(f"meta_json: expected {num_levels} level entries (num_levels), got {len(level_info)}")
    expected = _expected_keys(num_levels, has_texel)
    missing, extra = sorted(expected - arrays.keys()), sorted(arrays.keys() - expected)
    if missing:
        _fail(f"missing arrays {missing[:5]}{' ...' if len(missing) > 5 else ''} ({len(missing)} in all)")
    if extra:
        _fail(f"unexpected arrays {extra[:5]}{' ...' if len(extra) > 5 else ''} ({len(extra)} in all)")
    if _checksum(arrays, document) != stored_checksum:
        _fail("checksum mismatch: the file was corrupted or modified after it was written")

    def t(name: str) -> torch.Tensor:
        arr = arrays[name]
        try:
            return torch.from_numpy(arr)
        except (TypeError, ValueError) as err:  # e.g. strings or a non-native byte order
            raise HierarchyError(
                f"{name}: expected a native-byte-order int64, bool or float array, got dtype {arr.dtype.str}"
            ) from err

    levels = [
        HierarchyLevel(
            **{name: t(f"level{l}/{name}") for name in _LEVEL_FIELDS},
            spiral_length=level_info[l][0],
            dilation=level_info[l][1],
        )
        for l in range(num_levels)
    ]
    h = MeshHierarchy(
        levels=levels,
        down=[t(f"down{l}") for l in range(num_levels - 1)],
        up_index=[t(f"up{l}/index") for l in range(num_levels - 1)],
        up_weight=[t(f"up{l}/weight") for l in range(num_levels - 1)],
        texel_map=TexelMap(**{name: t(f"texel/{name}") for name in _TEXEL_FIELDS}) if has_texel else None,
        meta=meta,
    )
    check_hierarchy(h)
    if expected_template_hash is not None:
        want = expected_template_hash.content_hash() if isinstance(expected_template_hash, Mesh) else str(expected_template_hash)
        found = meta.get("template_hash")
        if found != want:
            _fail(
                f"built for another template: expected template hash {want[:16]}..., "
                f"got {str(found)[:16] + '...' if found else 'none'}"
            )
    return h


# ----------------------------------------------------------------------------- cache
def default_cache_dir() -> Path:
    """``$MESH_DECODER_CACHE`` if set, else ``~/.cache/mesh_decoder``."""
    env = os.environ.get("MESH_DECODER_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "mesh_decoder"


def resolve_cache_dir(cache_dir: str | os.PathLike | bool | None) -> Path | None:
    """``None``/``False`` -> no cache, ``True`` -> :func:`default_cache_dir`, a path -> that path."""
    if cache_dir is None or cache_dir is False:
        return None
    if cache_dir is True:
        return default_cache_dir()
    if isinstance(cache_dir, (str, os.PathLike)):
        return Path(cache_dir).expanduser()
    raise TypeError(f"cache_dir: expected None, True or a directory path, got {type(cache_dir).__name__}")


#: Part of the cache key, bumped when the same parameters come to build other operators, so that a cache
#: filled before never answers for the build: 2 builds from positions and UVs rounded to float32.
BUILD_REVISION = 2


def cache_key(params: dict, revision: int = BUILD_REVISION) -> str:
    """SHA-256 of the canonical JSON of the build parameters (template hash included) and the build
    ``revision`` (revision 1's key is the parameters' alone, as it was)."""
    keyed = params if revision == 1 else {**params, "build_revision": revision}
    return hashlib.sha256(_canonical_json(keyed).encode("utf-8")).hexdigest()


def cache_file(cache_dir: str | os.PathLike, key: str) -> Path:
    """The cache file of ``key`` in ``cache_dir``: ``hierarchy-<key>.npz``."""
    return Path(cache_dir) / f"hierarchy-{key}.npz"
