"""Shared fixtures of the nn tests.

A synthetic hierarchy with valid random operators (fast wiring tests, variants on
demand), and real hierarchies of small face, head and sphere templates.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mesh_decoder.hierarchy import HierarchyLevel, MeshHierarchy, TexelMap, build_hierarchy
from mesh_decoder.mesh.templates import face_template, head_template, icosphere


def _random_graph(rng: np.random.Generator, V: int, extra: int = 2) -> np.ndarray:
    """Undirected edges ``(E, 2)``: a random cycle (every vertex has degree >= 2) plus random chords."""
    perm = rng.permutation(V)
    edges = [np.stack([perm, np.roll(perm, 1)], axis=1)]
    chords = rng.integers(0, V, size=(extra * V, 2))
    edges.append(chords[chords[:, 0] != chords[:, 1]])
    e = np.sort(np.concatenate(edges), axis=1)
    return np.unique(e, axis=0)


def _scaled_laplacian(V: int, edges: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """``-D^-1/2 A D^-1/2`` as COO (both directions of every edge)."""
    rows = np.concatenate([edges[:, 0], edges[:, 1]])
    cols = np.concatenate([edges[:, 1], edges[:, 0]])
    deg = np.bincount(rows, minlength=V).astype(np.float64)
    w = -1.0 / np.sqrt(deg[rows] * deg[cols])
    order = np.lexsort((cols, rows))
    index = torch.from_numpy(np.stack([rows[order], cols[order]]))
    return index, torch.from_numpy(w[order]).float()


def _random_spirals(rng: np.random.Generator, V: int, S: int) -> torch.Tensor:
    spirals = rng.integers(0, V, size=(V, S))
    spirals[:, 0] = np.arange(V)
    short = rng.random(V) < 0.2  # some spirals run out of vertices: pad with V
    cut = rng.integers(2, S, size=V)
    for v in np.flatnonzero(short):
        spirals[v, cut[v]:] = V
    return torch.from_numpy(spirals.astype(np.int64))


def make_synthetic_hierarchy(
    sizes=(90, 40, 18, 8), spiral_length: int = 9, texture_size: int = 16, seed: int = 0, dilation: int = 1,
    factors=None,
) -> MeshHierarchy:
    """A hierarchy with valid random operators (no geometry meaning), for fast wiring tests."""
    rng = np.random.default_rng(seed)
    levels = []
    for V in sizes:
        edges = _random_graph(rng, V)
        li, lw = _scaled_laplacian(V, edges)
        levels.append(HierarchyLevel(
            vertices=torch.from_numpy(rng.normal(size=(V, 3))).float(),
            faces=torch.from_numpy(rng.integers(0, V, size=(2 * V, 3))),
            spirals=_random_spirals(rng, V, spiral_length),
            laplacian_index=li,
            laplacian_weight=lw,
            original_index=torch.from_numpy(np.sort(rng.choice(sizes[0], size=V, replace=False))),
            spiral_length=spiral_length,
            dilation=dilation,
        ))
    down, up_index, up_weight = [], [], []
    for fine, coarse in zip(sizes[:-1], sizes[1:]):
        down.append(torch.from_numpy(np.sort(rng.choice(fine, size=coarse, replace=False))))
        up_index.append(torch.from_numpy(rng.integers(0, coarse, size=(fine, 3))))
        up_weight.append(torch.from_numpy(rng.dirichlet(np.ones(3), size=fine)).float())
    H = W = texture_size
    texel_map = TexelMap(
        index=torch.from_numpy(rng.integers(0, sizes[0], size=(H, W, 3))),
        weight=torch.from_numpy(rng.dirichlet(np.ones(3), size=(H, W))).float(),
        face=torch.from_numpy(rng.integers(-1, 2 * sizes[0], size=(H, W))),
        mask=torch.from_numpy(rng.random((H, W)) < 0.7),
    )
    if factors is None:
        factors = [round(a / b, 3) for a, b in zip(sizes[:-1], sizes[1:])]
    meta = {"factors": list(factors), "template_hash": f"synthetic-{seed}"}
    return MeshHierarchy(levels, down, up_index, up_weight, texel_map, meta)


@pytest.fixture(scope="session")
def synthetic_hierarchy() -> MeshHierarchy:
    return make_synthetic_hierarchy()


# ------------------------------------------------------------------ real templates
@pytest.fixture(scope="session")
def face_mesh():
    return face_template(1000, seed=0)


@pytest.fixture(scope="session")
def head_mesh():
    return head_template(1000, seed=0)


@pytest.fixture(scope="session")
def face_hierarchy(face_mesh) -> MeshHierarchy:
    """1000-vertex face, factors (4, 4): 1000 -> 250 -> 63."""
    return build_hierarchy(face_mesh, factors=(4, 4), spiral_lengths=9, texture_size=64)


@pytest.fixture(scope="session")
def head_hierarchy(head_mesh) -> MeshHierarchy:
    """1000-vertex head (UV seam down the back), factors (2, 2, 2)."""
    return build_hierarchy(head_mesh, factors=(2, 2, 2), spiral_lengths=9, texture_size=64)


@pytest.fixture(scope="session")
def sphere_hierarchy() -> MeshHierarchy:
    """Icosphere with 2 subdivisions (162 vertices), factors (2, 2), automatic UVs."""
    return build_hierarchy(icosphere(2), factors=(2, 2), spiral_lengths=9, texture_size=32)


@pytest.fixture(scope="session")
def preset_hierarchy(face_mesh) -> MeshHierarchy:
    """Five levels, as the presets' factors (4, 4, 4, 4) give: 1000 -> 250 -> 63 -> 16 -> 4."""
    from mesh_decoder.nn.presets import preset_hierarchy_params

    return build_hierarchy(face_mesh, **preset_hierarchy_params("spiralnet++-coma"), texture_size=None)


@pytest.fixture(scope="session")
def make_hierarchy():
    """The synthetic hierarchy factory, for tests that need variants."""
    return make_synthetic_hierarchy
