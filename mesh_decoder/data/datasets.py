r"""Datasets of meshes in dense correspondence with a template.

* :class:`SyntheticFaceDataset`: faces drawn from :class:`~mesh_decoder.data.synthetic.SyntheticFaces`
  with COMA-style interpolation / extrapolation splits.
* :class:`MeshFolderDataset`: a folder of registered scans (OBJ, PLY, OFF) that
  share the template's triangles, optionally rigidly aligned to it.

Both yield dicts of float32 tensors, ``"vertices" (V, 3)`` (mm for the synthetic faces,
the files' own units for a folder) and, where
available, ``"colors" (V, 3)`` in ``[0, 1]``, and offer :meth:`normalization`, the
per-vertex mean and standard deviation over the set used to standardise decoder
targets.
"""

from __future__ import annotations

import fnmatch
import glob
import numbers
import os
import warnings
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from .._checks import check_int, positive_int
from ..errors import MeshFileError, MeshFileNotFoundError
from ..mesh.container import Mesh
from .synthetic import (
    GENERATOR_VERSION,
    PARAM_NAMES,
    FaceParams,
    SyntheticFaces,
    extrapolation_split,
    interpolation_split,
)

__all__ = ["SyntheticFaceDataset", "MeshFolderDataset", "rigid_align"]


def rigid_align(source, target, scale: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    r"""Least-squares rotation, translation (and scale) taking ``source`` onto ``target``.

    Kabsch / Umeyama ("Least-squares estimation of transformation parameters
    between two point patterns", IEEE TPAMI 1991): with centred points ``X``, ``Y``
    and the SVD ``Y^T X / V = U D W^T``,

    .. math::
        R = U S W^T,\quad S = \mathrm{diag}(1, 1, \det(U W^T)),\quad
        c = \frac{\mathrm{tr}(D S)}{\tfrac1V \lVert X \rVert^2},\quad
        t = \bar y - c R \bar x,

    which minimises :math:`\sum_i \lVert c R x_i + t - y_i \rVert^2` over proper
    rotations (``c = 1`` unless ``scale``).

    Args:
        source: ``(V, 3)`` points to move.
        target: ``(V, 3)`` corresponding points.
        scale: also fit a uniform scale. Default ``False``.

    Returns:
        ``(aligned (V, 3), rotation (3, 3), translation (3,), scale)`` with
        ``aligned = scale * source @ rotation.T + translation``.

    Shapes:
        ``(V, 3), (V, 3) -> (V, 3), (3, 3), (3,), float``.
    """
    x = np.asarray(source, dtype=np.float64)
    y = np.asarray(target, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != 3 or x.shape != y.shape or x.shape[0] == 0:
        raise ValueError(f"source, target: expected two (V, 3) arrays of equal shape, V >= 1, "
                         f"got {x.shape} and {y.shape}")
    for name, a in (("source", x), ("target", y)):
        bad = ~np.isfinite(a).all(axis=1)
        if bad.any():
            raise ValueError(f"{name}: expected finite points, got NaN or inf at {int(bad.sum())} points "
                             f"(first: point {int(np.flatnonzero(bad)[0])})")
    mx, my = x.mean(axis=0), y.mean(axis=0)
    xc, yc = x - mx, y - my  # (V, 3)
    if scale and not np.sqrt((xc**2).sum(axis=1).mean()) > 1e-9 * np.abs(x).max():  # spread at rounding level
        raise ValueError("source: expected points that are not all equal to fit a scale, got one repeated point")
    cov = yc.T @ xc / x.shape[0]  # (3, 3)
    u, d, wt = np.linalg.svd(cov)
    sign = np.ones(3)
    sign[2] = np.sign(np.linalg.det(u @ wt)) or 1.0  # a proper rotation, never a reflection
    rot = (u * sign) @ wt
    c = float((d * sign).sum() / (xc**2).sum(axis=1).mean()) if scale else 1.0
    t = my - c * rot @ mx
    return c * x @ rot.T + t, rot, t, c


def _normalization(data: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-vertex mean and clamped std over the set. Shapes: ``(N, V, 3)`` -> ``(V, 3), (V, 3)``."""
    if data.shape[0] == 0:
        raise ValueError("normalization: expected at least one mesh in the dataset, got none")
    if isinstance(eps, bool) or not isinstance(eps, numbers.Real) or not 0 < eps < float("inf"):
        raise ValueError(f"eps: expected a finite positive number, got {eps!r}")
    data = data.to(torch.float64)
    mean = data.mean(dim=0)
    std = data.std(dim=0, unbiased=False).clamp_min(eps)
    return mean.to(torch.float32), std.to(torch.float32)


def _pick(name: str, value: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ValueError(f"{name}: expected one of {list(allowed)}, got {value!r}")
    return value


class SyntheticFaceDataset(Dataset):
    """Synthetic morphable faces with a train/test split.

    ``n`` faces are drawn with :meth:`SyntheticFaces.sample_params` from ``seed``;
    the split keeps some of them, and only those are generated (in memory, float32).

    Args:
        n: faces before splitting. Default ``1000``.
        seed: seeds the parameters and the interpolation split. Default ``0``.
        split: ``"train"``, ``"test"`` or ``"all"``. Default ``"train"``.
        kind: ``"interpolation"`` (random, ``test_fraction`` held out) or
            ``"extrapolation"`` (test = faces with ``params[key] > threshold``).
            Default ``"interpolation"``.
        template: a face or head template. Default ``None``: the generator's default
            (``face_template(5023)``).
        test_fraction: default ``0.1``.
        key: parameter of the extrapolation split. Default ``"jaw_open"``.
        threshold: default ``0.7``.
        generator_seed: layout of the generator's detail bumps. Default ``0``.

    Items are dicts of float32 tensors: ``"vertices" (V, 3)`` mm, ``"colors" (V, 3)``
    in ``[0, 1]`` and ``"params" (P,)`` (:data:`~mesh_decoder.data.synthetic.PARAM_NAMES`).

    Attributes:
        generator_version: :data:`~mesh_decoder.data.synthetic.GENERATOR_VERSION`.
        indices: ``(M,)`` positions of the kept faces among the ``n`` drawn.
        params: :class:`FaceParams` of the kept faces.
        meta: JSON-able provenance (generator version, seeds, split, template hash).
    """

    def __init__(
        self,
        n: int = 1000,
        seed: int = 0,
        split: str = "train",
        kind: str = "interpolation",
        template: Mesh | None = None,
        *,
        test_fraction: float = 0.1,
        key: str = "jaw_open",
        threshold: float = 0.7,
        generator_seed: int = 0,
    ):
        n = positive_int(n, "n")
        seed = check_int(seed, "seed", minimum=0)  # a negative seed is a ValueError, not a TypeError
        generator_seed = check_int(generator_seed, "generator_seed", minimum=0)  # named: it said "seed"
        split = _pick("split", split, ("train", "test", "all"))
        kind = _pick("kind", kind, ("interpolation", "extrapolation"))
        if key not in PARAM_NAMES:
            raise ValueError(f"key: expected one of {list(PARAM_NAMES)}, got {key!r}")
        self.generator = SyntheticFaces(template, seed=generator_seed)
        self.template = self.generator.template
        self.generator_version = GENERATOR_VERSION
        drawn = self.generator.sample_params(int(n), rng=np.random.default_rng([int(seed), 0xFACE]))
        if kind == "interpolation":
            train, test = interpolation_split(int(n), seed=int(seed), test_fraction=test_fraction)
        else:
            train, test = extrapolation_split(drawn, key=key, threshold=threshold)
        self.indices = {"train": train, "test": test, "all": np.arange(int(n))}[split]
        self.params: FaceParams = drawn[self.indices]
        vertices, colors = self.generator.generate(self.params)
        self._vertices = torch.from_numpy(vertices)  # (M, V, 3)
        self._colors = torch.from_numpy(colors)  # (M, V, 3)
        self._params = torch.from_numpy(self.params.values.astype(np.float32))  # (M, P)
        self.meta: dict[str, Any] = {
            "generator_version": GENERATOR_VERSION,
            "generator_seed": int(generator_seed),
            "n": int(n),
            "seed": int(seed),
            "split": split,
            "kind": kind,
            "num_faces": int(self.indices.size),
            "num_vertices": self.template.num_vertices,
            "template_hash": self.template.content_hash(),
            "param_names": list(PARAM_NAMES),
        }
        if kind == "interpolation":
            self.meta["test_fraction"] = float(test_fraction)
        else:
            self.meta.update(key=key, threshold=float(threshold))

    def __len__(self) -> int:
        return int(self._vertices.shape[0])

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        index = _index(index, len(self))
        return {"vertices": self._vertices[index], "colors": self._colors[index], "params": self._params[index]}

    @property
    def vertices(self) -> torch.Tensor:
        """All kept faces, ``(M, V, 3)`` float32."""
        return self._vertices

    @property
    def colors(self) -> torch.Tensor:
        """``(M, V, 3)`` float32."""
        return self._colors

    def normalization(self, of: str = "vertices", eps: float = 1e-3) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-vertex ``(mean (V, 3), std (V, 3))`` over the set; ``std`` is at least ``eps``.

        Args:
            of: ``"vertices"`` (mm) or ``"colors"``. Default ``"vertices"``.
            eps: lower bound of ``std``. Default ``1e-3``.
        """
        _pick("of", of, ("vertices", "colors"))
        return _normalization(self._vertices if of == "vertices" else self._colors, eps)

    def __repr__(self) -> str:
        return (f"SyntheticFaceDataset({len(self)} faces, V={self.template.num_vertices}, "
                f"split={self.meta['split']!r}, kind={self.meta['kind']!r}, version={GENERATOR_VERSION!r})")


def _posix_order(path: str) -> str:
    """``path`` with ``/`` for the platform's separators: a sort key that orders a folder's files alike on
    every platform (Windows' ``\\`` sorts after digits and capitals, ``/`` before them)."""
    return path.replace(os.sep, "/")


def _distinct_files(files: list[str]) -> list[str]:
    """``files`` with each file once: a symbolic link to a scan (or a folder reached twice through one) made a
    second copy of it, which could land in the training and the test split; the later names are dropped, said."""
    seen: dict[str, str] = {}
    kept, dropped = [], []
    for f in files:
        real = os.path.realpath(f)
        if real in seen:
            dropped.append((f, seen[real]))
        else:
            seen[real] = f
            kept.append(f)
    if dropped:
        f, first = dropped[0]
        warnings.warn(f"{len(dropped)} matched file{'s are' if len(dropped) != 1 else ' is'} another name of a "
                      f"file already read, and left out (first: {f}, the same file as {first}): each scan is read "
                      "once, or it could be in both splits", stacklevel=3)
    return kept


def _warn_unmatched(root: str, files: list[str], pattern: str) -> None:
    """Say which files in ``root`` itself a pattern would match but for case or a leading dot (``SCAN.OBJ``,
    ``.hidden.ply`` under ``*.obj|*.ply``): they were left out without a word. Files of other kinds a pattern
    leaves out on purpose (``*.ply`` under ``*.obj``) are not named."""
    matched = {os.path.realpath(f) for f in files}
    patterns = [p.strip().lower() for p in pattern.split("|") if p.strip() and "/" not in p]
    try:
        names = sorted(e.name for e in os.scandir(root) if e.is_file())
    except OSError:
        return
    missed = [n for n in names if os.path.realpath(os.path.join(root, n)) not in matched
              and any(fnmatch.fnmatchcase(n.lower().lstrip("."), p) for p in patterns)]
    if missed:
        shown = ", ".join(missed[:3]) + (f" and {len(missed) - 3} more" if len(missed) > 3 else "")
        warnings.warn(f"{root}: {len(missed)} mesh file{'s' if len(missed) != 1 else ''} not matched by pattern "
                      f"{pattern!r} left out ({shown}; patterns are case-sensitive, and * skips hidden files)",
                      stacklevel=3)


def _index(index, length: int) -> int:
    if isinstance(index, bool) or not isinstance(index, numbers.Integral):
        raise TypeError(f"index: expected an int, got {type(index).__name__}")
    i = int(index)
    if not -length <= i < length:
        raise IndexError(f"index {i} out of range for a dataset of {length} items")
    return i % length


class MeshFolderDataset(Dataset):
    """Registered meshes in a folder, all sharing the template's triangles.

    Every file matching ``pattern`` in ``root`` is read with
    :func:`mesh_decoder.mesh.io.load_mesh` when the dataset is built. Its faces must
    equal the template's exactly (same triangles, same order, same corner order);
    otherwise :class:`~mesh_decoder.errors.MeshFileError` names the file and the
    counts or the first differing face. It also names a position beyond float32 range
    (the dataset stores float32) and a broken symbolic link that matches ``pattern``
    (a scan that would otherwise be left out silently).

    Args:
        root: the folder.
        template: the :class:`Mesh` the scans are registered to.
        align: rigidly align each mesh to the template (rotation + translation,
            :func:`rigid_align`). Default ``False``.
        pattern: ``|``-separated glob patterns, relative to ``root``.
            Default ``"*.obj|*.ply|*.off"`` (case-sensitive; not recursive unless a
            pattern says ``**``).
        scale: with ``align``, also fit a uniform scale. Default ``False``.

    Items: ``{"vertices": (V, 3) float32, "index": int}`` plus ``"colors" (V, 3)``
    when every file has per-vertex colours (a texture map a file references is not
    read as colours).

    Attributes:
        files: the files, sorted.
        has_colors: whether items carry colours.
        files_without_colors: the files with no per-vertex colours (empty when
            ``has_colors``).
        transforms: with ``align``, one ``(rotation (3, 3), translation (3,), scale)``
            per file; else ``None``.
    """

    def __init__(self, root, template: Mesh, align: bool = False, pattern: str = "*.obj|*.ply|*.off",
                 *, scale: bool = False):
        from ..mesh.io import load_mesh  # the I/O layer is only needed here

        if not isinstance(template, Mesh):
            raise TypeError(f"template: expected a mesh_decoder Mesh, got {type(template).__name__}")
        root = os.fspath(root)
        if not os.path.isdir(root):
            # nothing there at all: also the FileNotFoundError of a missing file
            error = MeshFileError if os.path.lexists(root) else MeshFileNotFoundError
            raise error(root, "expected a directory of mesh files, found none at this path")
        patterns = [p.strip() for p in str(pattern).split("|") if p.strip()]
        if not patterns:
            raise ValueError(f"pattern: expected glob patterns separated by '|', got {pattern!r}")
        matches = {f for p in patterns for f in glob.glob(os.path.join(glob.escape(root), p), recursive=True)}
        for f in sorted(matches):
            if os.path.islink(f) and not os.path.exists(f):  # a scan on a drive not mounted, a moved file
                raise MeshFileError(f, f"expected a mesh file, found a broken symbolic link to {os.readlink(f)}")
        # sorted as '/'-separated paths, so the order, and with it a split, is the same on Windows
        files = _distinct_files(sorted((f for f in matches if os.path.isfile(f)), key=_posix_order))
        if not files:
            raise MeshFileError(root, f"expected files matching {pattern!r}, found none")
        _warn_unmatched(root, files, pattern)
        self.root, self.template, self.files = root, template, files
        vertices, colors, self.transforms = [], [], ([] if align else None)
        for path in files:
            mesh = load_mesh(path)
            _check_same_faces(path, mesh, template)
            v = mesh.vertices
            _check_float32(path, v)
            if align:
                v, rot, t, c = rigid_align(v, template.vertices, scale=scale)
                self.transforms.append((rot, t, c))
            vertices.append(v)
            colors.append(mesh.colors)
        self.files_without_colors = [f for f, c in zip(files, colors) if c is None]
        self.has_colors = not self.files_without_colors
        self._vertices = torch.from_numpy(np.stack(vertices).astype(np.float32))  # (N, V, 3)
        self._colors = torch.from_numpy(np.stack(colors).astype(np.float32)) if self.has_colors else None
        self.meta: dict[str, Any] = {
            "root": root,
            "pattern": pattern,
            "num_files": len(files),
            "align": bool(align),
            "scale": bool(scale),
            "template_hash": template.content_hash(),
        }

    def __len__(self) -> int:
        return int(self._vertices.shape[0])

    def __getitem__(self, index: int) -> dict[str, Any]:
        i = _index(index, len(self))
        item: dict[str, Any] = {"vertices": self._vertices[i], "index": i}
        if self._colors is not None:
            item["colors"] = self._colors[i]
        return item

    @property
    def vertices(self) -> torch.Tensor:
        """All meshes, ``(N, V, 3)`` float32 (aligned if ``align``)."""
        return self._vertices

    def normalization(self, of: str = "vertices", eps: float = 1e-3) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-vertex ``(mean (V, 3), std (V, 3))`` over every file of the folder (population std, at least
        ``eps``): training computes it over its training split only; for that, compute it on a
        ``torch.utils.data.Subset``'s faces, e.g. ``self.vertices[train_indices]``."""
        _pick("of", of, ("vertices", "colors"))
        if of == "colors" and self._colors is None:
            raise ValueError(f"of='colors': expected colours in every file under {self.root}, "
                             f"{self.missing_colors()}")
        return _normalization(self._vertices if of == "vertices" else self._colors, eps)

    def missing_colors(self) -> str:
        """Which files have no per-vertex colours, in words: ``"3 of 12 files have none: a.obj, ..."``."""
        missing, n = self.files_without_colors, len(self.files)
        names = ", ".join(os.path.basename(f) for f in missing[:5]) + (", ..." if len(missing) > 5 else "")
        return (f"{len(missing)} of {n} file{'s' if n != 1 else ''} {'has' if len(missing) == 1 else 'have'} none: "
                f"{names} (a texture map a file references is not read as per-vertex colours)")

    def __repr__(self) -> str:
        return f"MeshFolderDataset({len(self)} meshes from {self.root!r}, V={self.template.num_vertices})"


def _check_float32(path: str, vertices: np.ndarray) -> None:
    """Raise :class:`MeshFileError` unless every position of ``vertices (V, 3)`` fits float32 (the dataset's dtype)."""
    with np.errstate(over="ignore"):
        bad = np.flatnonzero(~np.isfinite(vertices.astype(np.float32)).all(axis=1))
    if bad.size:
        i = int(bad[0])
        raise MeshFileError(
            path,
            f"vertex {i} is {vertices[i].tolist()}: expected magnitudes float32 can hold (up to "
            f"{float(np.finfo(np.float32).max):.4g}; the dataset stores float32 positions), "
            f"{bad.size} of {len(vertices)} vertices exceed it",
        )


def _check_same_faces(path: str, mesh: Mesh, template: Mesh) -> None:
    """Raise :class:`MeshFileError` unless ``mesh`` has exactly the template's vertices count and faces."""
    if mesh.num_vertices != template.num_vertices or mesh.num_faces != template.num_faces:
        raise MeshFileError(
            path,
            f"expected the template's {template.num_vertices} vertices and {template.num_faces} faces, "
            f"found {mesh.num_vertices} vertices and {mesh.num_faces} faces",
        )
    diff = np.flatnonzero((mesh.faces != template.faces).any(axis=1))
    if diff.size:
        i = int(diff[0])
        raise MeshFileError(
            path,
            f"face {i} is {mesh.faces[i].tolist()}, expected the template's {template.faces[i].tolist()} "
            f"({diff.size} of {template.num_faces} faces differ; faces must equal the template's, in order)",
        )
