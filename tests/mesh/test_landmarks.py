"""nearest_vertices: the landmark lookup of the built-in templates."""

from __future__ import annotations

import numpy as np
import pytest

from mesh_decoder.mesh.landmarks import nearest_vertices


def test_nearest_vertices_matches_a_loop():
    rng = np.random.default_rng(41)
    points = rng.normal(size=(50, 2))
    targets = {f"t{i}": tuple(rng.normal(size=2)) for i in range(7)}
    expected = {n: int(np.argmin(np.linalg.norm(points - np.asarray(t), axis=1))) for n, t in targets.items()}
    assert nearest_vertices(points, targets) == expected


def test_nearest_vertices_of_no_targets_is_empty():
    points = np.random.default_rng(42).normal(size=(5, 3))
    assert nearest_vertices(points, {}) == {}  # was "expected 3 coordinates per landmark, got shape (0,)"


def test_nearest_vertices_refuses_non_finite_input():
    rng = np.random.default_rng(43)
    points = rng.normal(size=(6, 2))
    with pytest.raises(ValueError, match=r"targets\['b'\]: expected finite coordinates"):
        nearest_vertices(points, {"a": (0.1, 0.2), "b": (np.nan, 0.0)})
    points[3, 1] = np.inf
    with pytest.raises(ValueError, match="points: expected finite coordinates"):
        nearest_vertices(points, {"a": (0.1, 0.2)})
