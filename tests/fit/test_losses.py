"""Data terms and ICP correspondences against loops and brute force."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mesh_decoder.fit import (
    find_correspondences,
    landmark_loss,
    photometric_loss,
    point_to_plane_loss,
    point_to_point_loss,
    vertex_loss,
)
from mesh_decoder.fit.losses import face_normals, surface_points

from .reference import surface_distance


def test_vertex_and_landmark_losses_match_loops():
    g = torch.Generator().manual_seed(1)
    pred = torch.randn(2, 7, 3, generator=g, dtype=torch.float64)
    target = torch.randn(7, 3, generator=g, dtype=torch.float64)
    w = torch.rand(7, generator=g, dtype=torch.float64)
    got = vertex_loss(pred, target, w)
    for b in range(2):
        ref = sum(float(w[i]) * float(((pred[b, i] - target[i]) ** 2).sum()) for i in range(7)) / float(w.sum())
        assert abs(float(got[b]) - ref) < 1e-12
    torch.testing.assert_close(vertex_loss(pred, target), ((pred - target) ** 2).sum(-1).mean(-1))
    p2 = torch.randn(1, 5, 2, generator=g, dtype=torch.float64)
    t2 = torch.randn(5, 2, generator=g, dtype=torch.float64)
    ref = sum(float(((p2[0, k] - t2[k]) ** 2).sum()) for k in range(5)) / 5
    assert abs(float(landmark_loss(p2, t2)[0]) - ref) < 1e-12
    with pytest.raises(ValueError, match=r"expected shape \(7, 3\)"):
        vertex_loss(pred, target[:5])


def test_point_losses_match_loops_and_handle_no_pairs():
    g = torch.Generator().manual_seed(2)
    p, q = torch.randn(6, 3, generator=g, dtype=torch.float64), torch.randn(6, 3, generator=g, dtype=torch.float64)
    n = torch.nn.functional.normalize(torch.randn(6, 3, generator=g, dtype=torch.float64), dim=1)
    ref_pp = sum(float(((p[i] - q[i]) ** 2).sum()) for i in range(6)) / 6
    ref_pl = sum(float(torch.dot(p[i] - q[i], n[i])) ** 2 for i in range(6)) / 6
    assert abs(float(point_to_point_loss(p, q)) - ref_pp) < 1e-12
    assert abs(float(point_to_plane_loss(p, q, n)) - ref_pl) < 1e-12
    assert float(point_to_point_loss(p[:0], q[:0])) == 0.0 and float(point_to_plane_loss(p[:0], q[:0], n[:0])) == 0.0


def test_photometric_loss_matches_masked_pixel_loop():
    g = torch.Generator().manual_seed(3)
    rendered = torch.rand(2, 3, 5, 4, generator=g, dtype=torch.float64)
    target = torch.rand(3, 5, 4, generator=g, dtype=torch.float64)
    mask = torch.rand(2, 5, 4, generator=g) < 0.5
    mask[1] = False
    got = photometric_loss(rendered, target, mask)
    total, count = 0.0, 0
    for i in range(5):
        for j in range(4):
            if mask[0, i, j]:
                total += float(((rendered[0, :, i, j] - target[:, i, j]) ** 2).mean())
                count += 1
    assert abs(float(got[0]) - total / count) < 1e-12
    assert float(got[1]) == 0.0  # nothing covered


def test_surface_points_and_face_normals_match_loops(template):
    g = torch.Generator().manual_seed(4)
    noise = torch.randn(1, template.num_vertices, 3, generator=g, dtype=torch.float64)
    v = torch.tensor(template.vertices)[None] + noise
    faces = torch.tensor(template.faces)
    face = torch.randint(0, faces.shape[0], (9,), generator=g)
    bary = torch.distributions.Dirichlet(torch.ones(3, dtype=torch.float64)).sample((9,))
    pts = surface_points(v, faces, face, bary)
    normals = face_normals(v, faces)
    for k in range(9):
        a, b, c = (v[0, int(i)] for i in faces[face[k]])
        torch.testing.assert_close(pts[0, k], bary[k, 0] * a + bary[k, 1] * b + bary[k, 2] * c)
        n = torch.linalg.cross(b - a, c - a)
        torch.testing.assert_close(normals[0, face[k]], n / n.norm())


def test_correspondences_match_brute_force_and_trim_outliers(template):
    rng = np.random.default_rng(5)
    # a coarse patch of the template keeps the brute-force reference fast
    keep_faces = template.faces[:60]
    used = np.unique(keep_faces)
    remap = -np.ones(template.num_vertices, dtype=np.int64)
    remap[used] = np.arange(used.size)
    vertices, faces = template.vertices[used], remap[keep_faces]
    points = vertices[rng.integers(0, len(vertices), 25)] + rng.normal(scale=1.0, size=(25, 3))
    far = vertices.mean(0) + np.array([[500.0, 0.0, 0.0]])  # an outlier
    scan = np.concatenate([points, far])
    corr = find_correspondences(vertices, faces, scan, trim=np.inf)
    assert corr.scan_index.tolist() == list(range(26))
    q = surface_points(torch.tensor(vertices)[None], torch.tensor(faces), corr.face, corr.bary)[0].numpy()
    np.testing.assert_allclose(np.linalg.norm(scan - q, axis=1), surface_distance(scan, vertices, faces), atol=1e-9)
    nearest = np.argmin(((vertices[:, None] - scan[None]) ** 2).sum(-1), axis=1)  # dense model -> scan
    np.testing.assert_array_equal(corr.scan_of_model.numpy(), nearest)
    trimmed = find_correspondences(vertices, faces, scan, trim=3.0, model_to_scan=False)
    assert 25 not in trimmed.scan_index.tolist()  # the outlier is dropped
    assert trimmed.model_index.numel() == 0 and np.isnan(trimmed.model_distance)
