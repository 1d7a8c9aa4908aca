"""Synthetic morphable faces: determinism, version, validity, interpretable parameters, splits."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mesh_decoder.data.synthetic import (
    APPEARANCE_NAMES,
    EXPRESSION_NAMES,
    GENERATOR_VERSION,
    IDENTITY_NAMES,
    PARAM_NAMES,
    FaceParams,
    SyntheticFaces,
    extrapolation_split,
    interpolation_split,
)
from mesh_decoder.mesh.templates import canonical_coordinates, face_template, head_template


@pytest.fixture(scope="module")
def face():
    return face_template(5023, seed=0)


@pytest.fixture(scope="module")
def gen(face):
    return SyntheticFaces(face, seed=0)


def normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    p = vertices[..., faces, :]  # (..., F, 3, 3)
    n = np.cross(p[..., 1, :] - p[..., 0, :], p[..., 2, :] - p[..., 0, :])
    return n / np.linalg.norm(n, axis=-1, keepdims=True)


# --------------------------------------------------------------------- version
def test_version_frozen():
    assert GENERATOR_VERSION == "synthetic-faces-1"
    assert SyntheticFaces.version == GENERATOR_VERSION
    assert "synthetic-faces-1" in repr(SyntheticFaces(face_template(500)))


def test_parameter_names():
    assert len(IDENTITY_NAMES) >= 8 and len(set(PARAM_NAMES)) == len(PARAM_NAMES)
    assert {"jaw_open", "smile", "brow_raise"} <= set(EXPRESSION_NAMES)
    assert {"skin_tone", "lip_colour"} <= set(APPEARANCE_NAMES)
    assert PARAM_NAMES == IDENTITY_NAMES + EXPRESSION_NAMES + APPEARANCE_NAMES


# ---------------------------------------------------------------- determinism
def test_deterministic(face):
    a, b = SyntheticFaces(face, seed=3), SyntheticFaces(face, seed=3)
    pa, pb = a.sample_params(6, rng=9), b.sample_params(6, rng=np.random.default_rng(9))
    np.testing.assert_array_equal(pa.values, pb.values)
    np.testing.assert_array_equal(pa.detail, pb.detail)
    va, ca = a.generate(pa)
    vb, cb = b.generate(pb)
    np.testing.assert_array_equal(va, vb)
    np.testing.assert_array_equal(ca, cb)
    # another generator seed moves the detail bumps; another sample seed other faces
    vc, _ = SyntheticFaces(face, seed=4).generate(pa)
    assert np.abs(vc - va).max() > 0.5
    assert not np.array_equal(a.sample_params(6, rng=10).values, pa.values)


def test_neutral_is_template(gen, face):
    v, c = gen.generate(FaceParams.neutral(2))
    assert v.dtype == np.float32 and c.dtype == np.float32
    np.testing.assert_allclose(v[0], face.vertices, atol=1e-4 * np.abs(face.vertices).max())
    np.testing.assert_array_equal(v[0], v[1])


def test_a_template_the_generator_does_not_reproduce_is_refused():
    """Any mesh was taken: a template in metres, moved or scaled gave synthetic faces 50 to 100 units off it, and
    training on them went on without a word."""
    small = face_template(500)
    head = head_template(600)
    SyntheticFaces(small), SyntheticFaces(head)  # the built-in templates are their own neutral faces
    rng = np.random.default_rng()
    for name, vertices in (("metres", small.vertices / 1000.0), ("moved", small.vertices + [0.0, 0.0, 50.0]),
                           ("scaled", small.vertices * rng.uniform(1.2, 1.5))):
        with pytest.raises(ValueError, match=r"^template: expected a built-in face or head template .* misses by "
                                             r"[\d.e+-]+ \(bounding box [\d.e+-]+\): another mesh, or in other "
                                             r"units or place\?"):
            SyntheticFaces(small.copy(vertices=vertices))


def test_shapes_ranges_and_batch_consistency(gen):
    p = gen.sample_params(5, rng=1)
    v, c = gen.generate(p)
    assert v.shape == c.shape == (5, gen.num_vertices, 3)
    assert c.min() >= 0.0 and c.max() <= 1.0 and np.isfinite(v).all()
    # vectorised over N == face by face, and independent of chunking
    for i in range(5):
        vi, ci = gen.generate(p[i])
        np.testing.assert_allclose(v[i], vi[0], rtol=0, atol=1e-5)
        np.testing.assert_allclose(c[i], ci[0], rtol=0, atol=1e-6)
    v1, c1 = gen.generate(p, chunk=2)
    np.testing.assert_array_equal(v, v1)
    np.testing.assert_array_equal(c, c1)


def test_any_template_and_vertex_count():
    for mesh in (face_template(777, seed=2), head_template(1234, seed=1)):
        g = SyntheticFaces(mesh)
        v, c = g.generate(g.sample_params(3, rng=0))
        assert v.shape == (3, mesh.num_vertices, 3) and c.shape == v.shape
        np.testing.assert_allclose(g.generate(FaceParams.neutral())[0][0], mesh.vertices, atol=2e-4)


# ------------------------------------------------------------------- validity
def _flipped(gen, params) -> tuple[int, float]:
    tpl = normals(gen.template.vertices, gen.template.faces)  # (F, 3)
    v, _ = gen.generate(params)
    dots = (normals(v.astype(np.float64), gen.template.faces) * tpl).sum(-1)  # (N, F)
    return int((dots <= 0).sum()), float(dots.min())


def test_no_flipped_faces_random(gen):
    flipped, worst = _flipped(gen, gen.sample_params(300, rng=123))
    assert flipped == 0, f"{flipped} flipped triangles (worst cos {worst:.3f})"


def test_no_flipped_faces_extremes_on_head():
    """Corners of the parameter cube, with the detail at its truncation bound, on the head."""
    g = SyntheticFaces(head_template(2000, seed=0), seed=1)
    rng = np.random.default_rng(5)
    values = rng.integers(0, 2, (120, len(PARAM_NAMES))).astype(float)
    detail = 3.0 * rng.choice([-1.0, 1.0], (120, g.detail_size))
    flipped, worst = _flipped(g, FaceParams(values, detail))
    assert flipped == 0, f"{flipped} flipped triangles (worst cos {worst:.3f})"


def test_not_low_rank(gen):
    """The detail bumps add variance beyond the interpretable shape parameters."""
    p = gen.sample_params(120, rng=4)
    shape_dims = len(IDENTITY_NAMES) + len(EXPRESSION_NAMES)

    def tail(params):
        v, _ = gen.generate(params)
        x = v.reshape(len(params), -1).astype(np.float64)
        sv = np.linalg.svd(x - x.mean(0), compute_uv=False)
        return (sv[shape_dims:] ** 2).sum() / (sv**2).sum()

    smooth, detailed = tail(FaceParams(p.values)), tail(p)
    assert detailed > 100 * smooth and detailed > 0.01  # ~2 % of the variance vs ~0.003 %


# ---------------------------------------------------------- interpretability
def _one(gen, **columns):
    return gen.generate(FaceParams.neutral().replace(**columns))


def test_jaw_open_is_a_rotation_below_the_mouth(gen, face):
    v0, _ = _one(gen)
    lm = face.landmarks
    gaps, chins = [], []
    for t in (0.0, 0.5, 1.0):
        v, _ = _one(gen, jaw_open=t)
        gaps.append(v[0, lm["upper_lip"], 1] - v[0, lm["lower_lip"], 1])
        chins.append(v[0, lm["chin"], 1])
        # above the mouth nothing moves
        for name in ("forehead", "eye_top_left", "nose_tip", "brow_mid_right"):
            np.testing.assert_allclose(v[0, lm[name]], v0[0, lm[name]], atol=0.02)
    assert gaps[0] < gaps[1] < gaps[2] and gaps[2] - gaps[0] > 10.0
    assert chins[0] > chins[1] > chins[2]
    # the chin turns about the axis (y, z) = (-20, 10) mm by nearly the full 18 degrees
    v, _ = _one(gen, jaw_open=1.0)
    axis = np.array([-20.0, 10.0])
    a, b = v0[0, lm["chin"], 1:] - axis, v[0, lm["chin"], 1:] - axis
    angle = math.degrees(math.atan2(a[0] * b[1] - a[1] * b[0], a @ b))
    assert 16.0 < angle < 18.0
    assert np.linalg.norm(a) == pytest.approx(np.linalg.norm(b), rel=1e-4)  # a rotation keeps the distance
    assert v[0, lm["chin"], 0] == pytest.approx(v0[0, lm["chin"], 0], abs=1e-4)  # about a horizontal (x) axis


def test_expressions_and_identity_act_where_named(gen, face):
    lm = face.landmarks
    v0, c0 = _one(gen)
    v, _ = _one(gen, smile=1.0)
    for corner in ("mouth_corner_left", "mouth_corner_right"):
        assert v[0, lm[corner], 1] > v0[0, lm[corner], 1] + 2.0  # up
        assert v[0, lm[corner], 2] < v0[0, lm[corner], 2] - 1.0  # back
    v, _ = _one(gen, brow_raise=1.0)
    assert v[0, lm["brow_mid_left"], 1] > v0[0, lm["brow_mid_left"], 1] + 4.0
    np.testing.assert_allclose(v[0, lm["chin"]], v0[0, lm["chin"]], atol=1e-3)
    lo, _ = _one(gen, face_width=0.0)
    hi, _ = _one(gen, face_width=1.0)
    assert np.ptp(hi[0, :, 0]) > np.ptp(lo[0, :, 0]) + 15.0
    lo, _ = _one(gen, nose_projection=0.0)
    hi, _ = _one(gen, nose_projection=1.0)
    assert hi[0, lm["nose_tip"], 2] > lo[0, lm["nose_tip"], 2] + 5.0
    lo, _ = _one(gen, eye_size=0.0)
    hi, _ = _one(gen, eye_size=1.0)

    def eye_width(v):
        return np.linalg.norm(v[0, lm["eye_outer_left"]] - v[0, lm["eye_inner_left"]])

    assert eye_width(hi) > eye_width(lo) + 3.0
    # appearance changes colours only
    v, c = _one(gen, skin_tone=1.0, lip_colour=1.0, redness=1.0)
    np.testing.assert_array_equal(v, v0)
    cheek = lm["cheek_left"]
    assert c[0, cheek].sum() < c0[0, cheek].sum() - 0.5  # darker skin


def test_colours_follow_features(gen, face):
    _, c = _one(gen)
    c = c[0]
    lm = face.landmarks
    canon = canonical_coordinates(face)
    eye = np.linalg.norm(canon - canon[lm["eye_outer_left"]] * [0.0, 1.0] - [29.0, 0.0], axis=1) < 2.5
    sclera_or_iris = c[eye]
    assert sclera_or_iris.size and (np.abs(sclera_or_iris - c[lm["cheek_left"]]).sum(1) > 0.2).all()
    lip = c[lm["lower_lip"]]
    assert lip[0] - lip[1] > c[lm["forehead"], 0] - c[lm["forehead"], 1]  # lips are redder than skin


# ---------------------------------------------------------------- FaceParams
def test_face_params_round_trip_and_errors():
    rng = np.random.default_rng(0)
    values = rng.uniform(size=(4, len(PARAM_NAMES)))
    p = FaceParams.from_array(values)
    np.testing.assert_array_equal(p.to_array(), values)
    assert p.names == PARAM_NAMES and len(p) == 4
    np.testing.assert_array_equal(p["smile"], values[:, PARAM_NAMES.index("smile")])
    assert len(p[1:3]) == 2 and len(p[0]) == 1 and len(p[np.array([True, False, True, True])]) == 3
    assert (FaceParams.from_array(values[0]).values == values[:1]).all()
    q = p.replace(smile=0.25)
    assert (q["smile"] == 0.25).all() and (p["smile"] != 0.25).all()
    assert set(p.as_dict()) == set(PARAM_NAMES)
    neutral = FaceParams.neutral(3)
    assert (neutral["jaw_open"] == 0).all() and (neutral["nose_width"] == 0.5).all()
    with pytest.raises(ValueError, match=r"\[0, 1\].*'jaw_open'"):
        FaceParams(values * 0 + np.eye(1, len(PARAM_NAMES), PARAM_NAMES.index("jaw_open")) * 1.5)
    with pytest.raises(ValueError, match=r"expected shape \(N, 22\)"):
        FaceParams(values[:, :5])
    with pytest.raises(ValueError, match="detail"):
        FaceParams(values, np.zeros((4, 3)))
    with pytest.raises(KeyError, match="nose_size"):
        p["nose_size"]
    with pytest.raises(TypeError):
        SyntheticFaces(face_template(500)).generate([[0.5] * len(PARAM_NAMES)])


def test_sample_params_distribution(gen):
    p = gen.sample_params(2000, rng=0)
    assert p.values.min() >= 0 and p.values.max() <= 1
    assert np.abs(p.values.mean(0) - 0.5).max() < 0.05
    assert np.abs(p.detail).max() <= 3.0 and abs(p.detail.std() - 1.0) < 0.05
    with pytest.raises(ValueError):
        gen.sample_params(-1)
    with pytest.raises(TypeError):
        gen.sample_params(3, rng="seed")


# --------------------------------------------------------------------- splits
@pytest.mark.parametrize("n,fraction", [(1000, 0.1), (37, 0.25), (5, 0.0)])
def test_interpolation_split(n, fraction):
    train, test = interpolation_split(n, seed=3, test_fraction=fraction)
    assert np.intersect1d(train, test).size == 0
    np.testing.assert_array_equal(np.sort(np.concatenate([train, test])), np.arange(n))
    assert test.size == round(fraction * n)
    assert (np.diff(train) > 0).all() and (np.diff(test) > 0).all()
    again = interpolation_split(n, seed=3, test_fraction=fraction)
    np.testing.assert_array_equal(again[1], test)
    if test.size > 3:
        assert not np.array_equal(interpolation_split(n, seed=4, test_fraction=fraction)[1], test)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        interpolation_split(n, test_fraction=1.5)


@pytest.mark.parametrize("key,threshold", [("jaw_open", 0.7), ("smile", 0.3)])
def test_extrapolation_split(gen, key, threshold):
    p = gen.sample_params(500, rng=8)
    train, test = extrapolation_split(p, key=key, threshold=threshold)
    column = p.values[:, PARAM_NAMES.index(key)]
    expected_test = [i for i in range(500) if column[i] > threshold]  # reference loop
    assert test.tolist() == expected_test
    np.testing.assert_array_equal(np.sort(np.concatenate([train, test])), np.arange(500))
    assert (column[train] <= threshold).all()
    np.testing.assert_array_equal(extrapolation_split(p.values, key, threshold)[1], test)
    with pytest.raises(KeyError):
        extrapolation_split(p, key="mouth_size")


def test_split_and_generation_arguments_are_checked():
    """Bad seeds, fractions, thresholds, counts and chunk sizes are errors, not truncated or ignored."""
    rng = np.random.default_rng(61)
    p = FaceParams.from_array(rng.uniform(size=(20, len(PARAM_NAMES))))
    for bad in (float("nan"), "0.5", None):
        with pytest.raises(ValueError, match=rf"^threshold: expected a finite number, got {bad!r}$"):
            extrapolation_split(p, threshold=bad)  # NaN held out nothing, silently
    with pytest.raises(ValueError, match=r"^seed: expected a non-negative int, got -1$"):
        interpolation_split(10, seed=-1)
    for bad in (1.5, None, True):  # the wrong type: a TypeError naming it
        with pytest.raises(TypeError, match=rf"^seed: expected a non-negative int, got {type(bad).__name__} {bad!r}$"):
            interpolation_split(10, seed=bad)  # 1.5 gave seed 1's split
    with pytest.raises(ValueError, match=r"^test_fraction: expected a number in \[0, 1\], got '0.5'$"):
        interpolation_split(10, test_fraction="0.5")
    np.testing.assert_array_equal(interpolation_split(10, seed=np.int64(3))[1], interpolation_split(10, seed=3)[1])
    with pytest.raises(ValueError, match=r"^n: expected a non-negative int, got -1$"):
        FaceParams.neutral(-1)
    with pytest.raises(TypeError, match=r"^n: expected a non-negative int, got float 2.5$"):
        FaceParams.neutral(2.5)
    gen = SyntheticFaces(face_template(500))
    for bad in (0, -3):
        with pytest.raises(ValueError, match=rf"^chunk: expected an int >= 1, got {bad!r}$"):
            gen.generate(p[:2], chunk=bad)
    for bad in ("x", 2.0):
        with pytest.raises(TypeError, match=rf"^chunk: expected an int >= 1, got {type(bad).__name__} {bad!r}$"):
            gen.generate(p[:2], chunk=bad)
    v1, c1 = gen.generate(p[:3], chunk=1)
    v3, c3 = gen.generate(p[:3], chunk=np.int64(3))
    np.testing.assert_array_equal(v1, v3)
    np.testing.assert_array_equal(c1, c3)
