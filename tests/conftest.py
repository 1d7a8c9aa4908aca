"""Shared pytest fixtures and hooks for the mesh_decoder test suite."""

from __future__ import annotations

import numpy as np
import pytest

from mesh_decoder.mesh import Mesh

_MESH_IO_FUZZ = pytest.StashKey[dict]()


def random_grid_mesh(
    rng: np.random.Generator,
    rows: int = 4,
    cols: int = 5,
    *,
    colors: bool = False,
    uv: str | None = None,
    landmarks: int = 0,
    shuffle: bool = True,
) -> Mesh:
    """A valid random mesh: a jittered ``rows x cols`` grid, two consistently wound triangles per cell.

    Positions are random float64; with ``shuffle`` the vertex and face orders are
    random permutations, so order-preservation checks are not trivially met.
    ``uv`` is ``None``, ``"vertex"`` (one UV per vertex, ``uv_faces == faces``)
    or ``"corner"`` (a UV table with seams, listed in order of first use by
    ``uv_faces`` without duplicates, the layout every reader returns).
    """
    gx, gy = np.meshgrid(np.arange(cols, dtype=np.float64), np.arange(rows, dtype=np.float64))
    V = rows * cols
    vertices = np.stack([gx.ravel(), gy.ravel(), rng.normal(size=V)], axis=1)  # (V, 3)
    vertices[:, :2] += rng.uniform(-0.3, 0.3, size=(V, 2))
    vertices *= rng.uniform(0.5, 200.0)
    vertices += rng.normal(size=3) * 50
    cells = (np.arange(rows - 1)[:, None] * cols + np.arange(cols - 1)[None, :]).ravel()  # (C,)
    faces = np.concatenate(
        [np.stack([cells, cells + 1, cells + cols], 1), np.stack([cells + 1, cells + cols + 1, cells + cols], 1)]
    )  # (F, 3)
    if shuffle:
        perm = rng.permutation(V)  # new index of each old vertex
        vertices_new = np.empty_like(vertices)
        vertices_new[perm] = vertices
        vertices = vertices_new
        faces = perm[faces][rng.permutation(faces.shape[0])]
        faces = np.roll(faces, rng.integers(0, 3), axis=1)  # rotate corners: same winding
    mesh_uv = mesh_uv_faces = None
    if uv == "vertex":
        mesh_uv, mesh_uv_faces = rng.random((V, 2)), faces.copy()
    elif uv == "corner":
        raw = rng.integers(0, max(3, faces.size // 2), size=faces.shape)  # (F, 3) shared and seam UVs
        _, first, inverse = np.unique(raw.ravel(), return_index=True, return_inverse=True)
        rank = np.empty_like(first)
        rank[np.argsort(first, kind="stable")] = np.arange(first.size)
        mesh_uv_faces = rank[inverse].reshape(faces.shape)
        mesh_uv = rng.random((first.size, 2))
    elif uv is not None:
        raise ValueError(f"uv: expected None, 'vertex' or 'corner', got {uv!r}")
    names = [f"lm{i}_{int(rng.integers(1000))}" for i in range(landmarks)]
    return Mesh(
        vertices=vertices,
        faces=faces,
        uv=mesh_uv,
        uv_faces=mesh_uv_faces,
        colors=rng.random((V, 3)) if colors else None,
        landmarks={n: int(rng.integers(V)) for n in names},
    ).validate()


@pytest.fixture(scope="session")
def make_grid_mesh():
    """The :func:`random_grid_mesh` factory (session-scoped, so hypothesis tests may use it)."""
    return random_grid_mesh


@pytest.fixture(scope="session")
def mesh_io_fuzz_counter(request) -> dict:
    """``{test name: cases tried}`` for the mesh I/O fuzz tests, reported at the end of the run."""
    return request.config.stash.setdefault(_MESH_IO_FUZZ, {})


def _train_tiny_run(tmp_path_factory, name: str, **model):
    """The folder of a finished one-epoch training run of a small spiral autoencoder on a 500-vertex face;
    ``model`` adds keys to the config's ``model`` section (e.g. ``joint=True``)."""
    from mesh_decoder.train import train

    root = tmp_path_factory.mktemp(name)
    config = {
        "template": {"vertices": 500},
        "hierarchy": {"factors": [2, 2], "texture_size": 0, "cache_dir": False},
        "data": {"n": 24, "seed": 4},
        "model": {"decoder": "spiral", "channels": [8, 8], "latent_size": 4, **model},
        "training": {"epochs": 1, "batch_size": 8, "seed": 9},
    }
    train(config, root / "run", progress=False)
    return root / "run"


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """A finished one-epoch training run of a small spiral autoencoder (its folder; copy it to change it)."""
    return _train_tiny_run(tmp_path_factory, "tiny_run")


@pytest.fixture(scope="session")
def tiny_joint_run(tmp_path_factory):
    """As ``tiny_run``, of a joint shape and colour model: it decodes ``(B, V, 6)``, xyz then rgb."""
    return _train_tiny_run(tmp_path_factory, "tiny_joint_run", joint=True)


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    counts = config.stash.get(_MESH_IO_FUZZ, None)
    if counts:
        detail = ", ".join(f"{name.removeprefix('test_fuzz_')} {n}" for name, n in counts.items())
        terminalreporter.write_sep("-", f"mesh I/O fuzz: {sum(counts.values())} cases tried ({detail})")
