"""A value of the wrong type is a ``TypeError`` naming the argument and the type (``got float 16.0``), and a
value of the right type out of range a ``ValueError``, as the README's Guarantees say: sizes, counts and
indices given as floats, bools or strings had raised ``ValueError`` (or ``HierarchyError``) in some places and
``TypeError`` in others."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from tests.nn.conftest import make_synthetic_hierarchy


@pytest.fixture(scope="module")
def hierarchy():
    return make_synthetic_hierarchy()  # 4 levels: (90, 40, 18, 8) vertices, spirals of 9


def _spiral(h, **kw):
    from mesh_decoder.nn.decoders import SpiralDecoder

    return SpiralDecoder.from_hierarchy(h, **{"channels": (8, 8, 8), **kw})


def _cheb(h, **kw):
    from mesh_decoder.nn.decoders import ChebDecoder

    return ChebDecoder.from_hierarchy(h, **{"channels": (8, 8, 8), **kw})


def _uv(**kw):
    from mesh_decoder.nn.decoders import UVTextureDecoder

    return UVTextureDecoder(**{"latent_size": 4, "texture_size": 16, "channels": 8, **kw})


def _joint(h, **kw):
    from mesh_decoder.nn.decoders import JointDecoder

    return JointDecoder.from_hierarchy(h, "cnn", **{"channels": (8, 12), "latent_size": 5, **kw})


def _level(h, level):
    from mesh_decoder.nn.graph import hierarchy_level

    return hierarchy_level(h, level)


def _pca_model(num_vertices, num_components):
    from mesh_decoder.pca import PCAModel

    return PCAModel(num_vertices, num_components)


def _pca():
    from mesh_decoder.pca import PCAModel

    return PCAModel(30, 4)


def _svd(rank):
    from mesh_decoder.pca import randomized_svd

    return randomized_svd(torch.randn(5, 4, generator=torch.Generator().manual_seed(0)), rank)


def _autoencoder(h):
    from mesh_decoder.nn.autoencoder import MeshAutoencoder
    from mesh_decoder.nn.decoders import SpiralDecoder
    from mesh_decoder.nn.encoders import SpiralEncoder

    return MeshAutoencoder(SpiralEncoder.from_hierarchy(h, latent_size=4, channels=(8, 8)),
                           SpiralDecoder.from_hierarchy(h, latent_size=4, channels=(8, 8)))


def _sample_params(n):
    from mesh_decoder.data.synthetic import SyntheticFaces

    return SyntheticFaces(None).sample_params(n)


def _dataset(n):
    from mesh_decoder.data.datasets import SyntheticFaceDataset

    return SyntheticFaceDataset(n=n)


def _stage(iterations):
    from mesh_decoder.fit.fit import Stage

    return Stage(("pose",), iterations)


def _point_cloud(every):
    from mesh_decoder.fit.targets import PointCloudTarget

    points = torch.randn(20, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    return PointCloudTarget(points, correspondence_every=every)


def _prior(size):
    from mesh_decoder.fit.adapters import GaussianPrior

    return GaussianPrior.standard_normal(size)


def _tile(**kw):
    from mesh_decoder.render.figures import tile_images

    return tile_images(np.zeros((3, 4, 4, 3)), **kw)


def _rasterize(max_candidates):
    from mesh_decoder.render.cameras import OrthographicCamera
    from mesh_decoder.render.rasterize import rasterize

    vertices = torch.rand(1, 3, 3, generator=torch.Generator().manual_seed(0))
    return rasterize(vertices, torch.tensor([[0, 1, 2]]), OrthographicCamera(), 8, max_candidates=max_candidates)


def _closest(k):
    from mesh_decoder.hierarchy.operators import closest_points_on_surface

    v = np.array([[0.0, 0, 0], [1, 0, 0], [0, 1, 0]])
    return closest_points_on_surface(np.zeros((2, 3)), v, np.array([[0, 1, 2]]), k=k)


# (label, call(hierarchy, value), a value of the wrong type, the message's start, a value of the right type out of
# range). The TypeError reads "<start>, got <type> <repr>"; the ValueError for the last value names it too.
CASES = [
    ("SpiralDecoder latent_size", lambda h, v: _spiral(h, latent_size=v), 16.0,
     "latent_size: expected a positive int", 0),
    ("SpiralDecoder out_channels", lambda h, v: _spiral(h, out_channels=v), True,
     "out_channels: expected a positive int", -1),
    ("SpiralDecoder channels not a sequence", lambda h, v: _spiral(h, channels=v), 8,
     "channels: expected a non-empty sequence of ints", ()),
    ("SpiralDecoder channels a string", lambda h, v: _spiral(h, channels=v), "ab",
     "channels: expected a non-empty sequence of ints", ()),
    ("SpiralDecoder channels entry", lambda h, v: _spiral(h, channels=(8, v)), 2.0,
     "channels[1]: expected a positive int", None),
    ("SpiralDecoder spiral_length", lambda h, v: _spiral(h, spiral_length=v), "9",
     "spiral_length: expected an int or a sequence of 3 to 4 values", (9,)),
    ("SpiralDecoder spiral_length float", lambda h, v: _spiral(h, spiral_length=v), 9.0,
     "spiral_length: expected an int or a sequence of 3 to 4 values", (9, 9, 9, 9, 9)),
    ("SpiralDecoder spiral_length bool", lambda h, v: _spiral(h, spiral_length=v), True,
     "spiral_length: expected a positive int", 0),
    ("SpiralDecoder spiral_length entry", lambda h, v: _spiral(h, spiral_length=(9, 9, v)), 9.0,
     "spiral_length[2]: expected a positive int", None),
    ("ChebDecoder K", lambda h, v: _cheb(h, K=v), 3.0, "K: expected a positive int", 0),
    ("UVTextureDecoder latent_size", lambda h, v: _uv(latent_size=v), 16.0,
     "latent_size: expected a positive int", 0),
    ("UVTextureDecoder channels", lambda h, v: _uv(channels=v), "8", "channels: expected a positive int", 0),
    ("UVTextureDecoder texture_size", lambda h, v: _uv(texture_size=v), 16.0,
     "texture_size: expected an int or (H, W) ints", (16, 16, 16)),
    ("UVTextureDecoder texture_size pair", lambda h, v: _uv(texture_size=v), (16, 16.0),
     "texture_size: expected an int or (H, W) ints", (16, 32)),
    ("JointDecoder texture_channels", lambda h, v: _joint(h, texture_channels=v), 2.7,
     "texture_channels: expected a positive int", 0),
    ("hierarchy_level", _level, 1.0, "level: expected an int in [0, 3]", 4),
    ("PCAModel num_components", lambda h, v: _pca_model(600, v), 4.0,
     "num_components: expected an integer >= 1", 0),
    ("PCAModel num_vertices", lambda h, v: _pca_model(v, 4), "600", "num_vertices: expected an integer >= 1", 0),
    ("PCAModel.sample", lambda h, v: _pca().sample(v), 2.0, "n: expected a non-negative integer", -1),
    ("PCAModel.truncate", lambda h, v: _pca().truncate(v), 2.0, "num_components: expected an integer in [1, 4]", 5),
    ("randomized_svd rank", lambda h, v: _svd(v), 2.0, "rank: expected an integer in [1, min(M, N) = 4]", 5),
    ("MeshAutoencoder.sample", lambda h, v: _autoencoder(h).sample(v), 2.0,
     "n: expected a non-negative int", -1),
    ("SyntheticFaces.sample_params", lambda h, v: _sample_params(v), 2.0, "n: expected a non-negative int", -1),
    ("SyntheticFaceDataset n", lambda h, v: _dataset(v), 2.0, "n: expected a positive int", 0),
    ("Stage iterations", lambda h, v: _stage(v), 2.0, "iterations: expected a non-negative int", -1),
    ("PointCloudTarget correspondence_every", lambda h, v: _point_cloud(v), 2.0,
     "correspondence_every: expected a positive int", 0),
    ("GaussianPrior.standard_normal", lambda h, v: _prior(v), 2.0, "size: expected a positive int", 0),
    ("tile_images ncols", lambda h, v: _tile(ncols=v), 2.7, "ncols: expected a positive int", 0),
    ("tile_images padding", lambda h, v: _tile(padding=v), "4", "padding: expected a non-negative int", -1),
    ("rasterize max_candidates", lambda h, v: _rasterize(v), 2.0, "max_candidates: expected a positive int", 0),
    ("closest_points_on_surface k", lambda h, v: _closest(v), 2.0, "k: expected an int >= 1", 0),
]


@pytest.mark.parametrize("call, wrong, start, out_of_range", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_a_wrong_type_is_a_type_error_and_a_wrong_value_a_value_error(hierarchy, call, wrong, start, out_of_range):
    with pytest.raises(TypeError, match=f"^{re.escape(f'{start}, got {type(wrong).__name__} {wrong!r}')}"):
        call(hierarchy, wrong)
    if out_of_range is not None:
        with pytest.raises(ValueError, match=f"^{re.escape(start.split(':')[0])}: expected") as info:
            call(hierarchy, out_of_range)
        assert not isinstance(info.value, TypeError)


def test_float_faces_are_a_type_error_in_every_edge_and_laplacian_builder():
    """The hierarchy's mesh_edge_index and scaled_laplacian said HierarchyError (a ValueError) where
    nn.mesh_edge_index, losses.mesh_edges and render.vertex_normals said TypeError."""
    from mesh_decoder.errors import HierarchyError
    from mesh_decoder.hierarchy import laplacian
    from mesh_decoder.hierarchy.operators import closest_points_on_surface, upsample_operator
    from mesh_decoder.nn import mesh_edge_index

    faces = np.array([[0, 1, 2], [0, 2, 3]])
    v = np.array([[0.0, 0, 0], [1, 0, 0], [0, 1, 0], [1, 1, 0]])
    for bad in (faces.astype(np.float64), torch.from_numpy(faces).float(), faces.astype(bool)):
        dtype = re.escape(str(bad.dtype).removeprefix("torch."))
        for build in (laplacian.mesh_edge_index, laplacian.scaled_laplacian, mesh_edge_index):
            with pytest.raises(TypeError, match=rf"^faces: expected an integer (array|tensor), got dtype .*{dtype}"):
                build(bad, 4)
    with pytest.raises(TypeError, match=r"^faces: expected an integer array, got dtype float64$"):
        closest_points_on_surface(v, v, faces.astype(np.float64))
    with pytest.raises(TypeError, match=r"^coarse_faces: expected an integer array, got dtype float64$"):
        upsample_operator(v, v, faces.astype(np.float64))
    with pytest.raises(HierarchyError, match=r"^faces: expected indices in \[0, 3\), got \[0, 3\]$"):
        laplacian.scaled_laplacian(faces, 3)  # a wrong value stays a HierarchyError


def test_texture_size_errors_report_the_size_as_given(hierarchy):
    """An int 24 was reported as 'got (24, 24)', a size nobody gave."""
    for size in (24, (24, 24), (16, 32), 4):
        with pytest.raises(ValueError, match=rf"^texture_size: expected a square power of two >= 8 \(4 \* 2\*\*n\), "
                                             rf"got {re.escape(repr(size))}$"):
            _uv(texture_size=size)
    assert _uv(texture_size=(16, 16)).texture_size == _uv(texture_size=np.int64(16)).texture_size == 16
    with pytest.raises(ValueError, match=r"^texture_size: expected the texel map's size \(16, 16\), got 32$"):
        _joint(hierarchy, texture_size=32)


def test_autoencoder_sample_zero_is_an_empty_batch_like_pca(hierarchy):
    """MeshAutoencoder.sample(0) raised ValueError where PCAModel.sample(0) gives an empty (0, V, 3) batch."""
    ae = _autoencoder(hierarchy)
    for dtype in (torch.float32, torch.float64):
        ae = ae.to(dtype)
        one = ae.sample(1, generator=torch.Generator().manual_seed(0))
        empty = ae.sample(0, generator=torch.Generator().manual_seed(0))
        assert isinstance(empty, torch.Tensor) and empty.shape == (0, *one.shape[1:]) == (0, 90, 3)
        assert empty.dtype == one.dtype == dtype and empty.device == one.device
        latents = ae.sample_latents(0)
        assert latents.shape == (0, 4) and latents.dtype == dtype
        assert ae.sample(np.int64(0)).shape == (0, 90, 3)
    pca = _pca()
    assert pca.sample(0).shape == (0, 30, 3)  # the model it follows


def test_shared_int_checks_name_the_type():
    from mesh_decoder._checks import int_value, non_negative_int, positive_int

    assert positive_int(np.int64(3), "k") == 3 and type(positive_int(np.int64(3), "k")) is int
    assert non_negative_int(0, "n") == 0 and int_value(-5, "x", "an int") == -5
    for bad, kind in ((2.0, "float"), (True, "bool"), (np.bool_(True), "bool"), ("3", "str"), (None, "NoneType")):
        for check, want in ((positive_int, "a positive int"), (non_negative_int, "a non-negative int")):
            with pytest.raises(TypeError, match=f"^k: expected {want}, got {kind}_? "):
                check(bad, "k")
    with pytest.raises(ValueError, match="^k: expected a positive int, got 0$"):
        positive_int(0, "k")
    with pytest.raises(ValueError, match="^n: expected a non-negative int, got -1$"):
        non_negative_int(-1, "n")
