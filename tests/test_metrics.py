"""3DMM measures on toy distributions whose answers are known, plus loop references."""

import math
import re

import numpy as np
import pytest
import torch

from mesh_decoder.metrics import (
    compactness,
    error_summary,
    generalisation,
    nearest_face_distance,
    per_vertex_error,
    reconstruct,
    specificity,
)
from mesh_decoder.pca import PCAModel


def subspace_faces(n, v, variances, seed, dtype=torch.float64):
    """Faces on an exact k-dimensional affine subspace whose sample covariance has
    eigenvalues exactly ``variances`` (centred orthogonal coefficient columns)."""
    g = torch.Generator().manual_seed(seed)
    k = len(variances)
    mean = torch.randn(v, 3, generator=g, dtype=dtype) * 30
    basis, _ = torch.linalg.qr(torch.randn(3 * v, k, generator=g, dtype=dtype))  # (3V, k)
    raw = torch.randn(n, k, generator=g, dtype=dtype)
    q, _ = torch.linalg.qr(raw - raw.mean(dim=0))  # (n, k) orthonormal, centred columns
    coeffs = q * torch.sqrt(torch.as_tensor(variances, dtype=dtype) * (n - 1))  # (n, k)
    return mean + (coeffs @ basis.T).reshape(n, v, 3), mean, basis, coeffs


def test_per_vertex_error_against_loop():
    g = torch.Generator().manual_seed(1)
    pred, target = torch.randn(3, 7, 3, generator=g), torch.randn(3, 7, 3, generator=g)
    err = per_vertex_error(pred, target)
    ref = torch.empty(3, 7)
    for b in range(3):
        for v in range(7):
            ref[b, v] = math.sqrt(sum((float(pred[b, v, c]) - float(target[b, v, c])) ** 2 for c in range(3)))
    torch.testing.assert_close(err, ref)
    assert per_vertex_error(pred[0], target[0]).shape == (7,)
    as_numpy = per_vertex_error(pred.numpy(), target.numpy())
    assert isinstance(as_numpy, np.ndarray)
    np.testing.assert_allclose(as_numpy, ref.numpy(), rtol=1e-6)
    torch.testing.assert_close(per_vertex_error(pred, target[1]), torch.linalg.norm(pred - target[1], dim=-1))
    with pytest.raises(ValueError, match=r"target: expected shape \(3, 7, 3\) \(as pred\) or \(7, 3\), got \(3, 6, 3\)"):
        per_vertex_error(pred, target[:, :6])


def test_error_summary_against_numpy():
    rng = np.random.default_rng(2)
    pred, target = rng.normal(size=(4, 9, 3)), rng.normal(size=(4, 9, 3))
    d = np.linalg.norm(pred - target, axis=-1)
    s = error_summary(pred, target)
    assert s["count"] == 36
    np.testing.assert_allclose([s["mean"], s["median"], s["std"], s["max"]],
                               [d.mean(), np.median(d), d.std(), d.max()], rtol=1e-12)
    mask = rng.random(9) > 0.4
    sm = error_summary(torch.from_numpy(pred), torch.from_numpy(target), mask=torch.from_numpy(mask))
    np.testing.assert_allclose(sm["mean"], d[:, mask].mean(), rtol=1e-12)
    assert sm["count"] == 4 * int(mask.sum())


def test_compactness_known_spectrum():
    variances = [9.0, 4.0, 2.0, 1.0]
    x, _, _, coeffs = subspace_faces(30, 10, variances, seed=3)
    expected = np.cumsum(variances) / sum(variances)
    # components beyond the data's rank are noise: said (their coefficients blew up to 1e27 without a word)
    with pytest.warns(UserWarning, match=r"^num_components 6: the 30 samples have numerical rank 4: singular value 5 "
                                         r"is .*; components 5 to 6 are noise, .* fit at most 4$"):
        model = PCAModel.fit(x, num_components=6)
    np.testing.assert_allclose(compactness(model)[:4], expected, rtol=1e-10)
    np.testing.assert_allclose(compactness(model)[4:], 1.0, rtol=1e-10)
    np.testing.assert_allclose(compactness(model.truncate(2)), expected[:2], rtol=1e-10)
    # an "autoencoder" latent space: the coefficients in rotated axes
    rot, _ = torch.linalg.qr(torch.randn(4, 4, generator=torch.Generator().manual_seed(4), dtype=torch.float64))
    np.testing.assert_allclose(compactness(coeffs @ rot), expected, rtol=1e-10)
    np.testing.assert_allclose(compactness(np.array([2.0, 9.0, 1.0, 4.0])), expected, rtol=1e-12)
    np.testing.assert_allclose(compactness(np.array([9.0, 4.0]), total_variance=16.0), [9 / 16, 13 / 16])


def projection_errors_reference(train, test, k):
    """Slow reference: top-k eigenvectors of the dense covariance, loop over faces."""
    flat = train.reshape(train.shape[0], -1).numpy()
    mean = flat.mean(axis=0)
    cov = (flat - mean).T @ (flat - mean) / (flat.shape[0] - 1)
    evals, evecs = np.linalg.eigh(cov)
    top = evecs[:, np.argsort(evals)[::-1][:k]]  # (3V, k)
    errors = []
    for face in test.reshape(test.shape[0], -1).numpy():
        rec = mean + top @ (top.T @ (face - mean))
        for v in range(face.size // 3):
            errors.append(np.linalg.norm(rec[3 * v:3 * v + 3] - face[3 * v:3 * v + 3]))
    return float(np.mean(errors))


def test_generalisation_on_exact_subspace():
    x, *_ = subspace_faces(50, 12, [16.0, 9.0, 4.0, 1.0], seed=5)
    train, test = x[:40], x[40:]
    sizes = [1, 2, 3, 4, 5, 6]
    result = generalisation(PCAModel, train, test, sizes)
    assert list(result) == sizes
    for k in (4, 5, 6):
        assert result[k] < 1e-9
    assert result[1] > result[2] > result[3] > 1e-3
    for k in (1, 2, 3):
        assert math.isclose(result[k], projection_errors_reference(train, test, k), rel_tol=1e-8)
    # fit once and truncate == refit for every size == a dict of models
    refit = generalisation(lambda tr, k: PCAModel.fit(tr, num_components=k), train, test, sizes)
    fitted = PCAModel.fit(train, num_components=6)
    truncated = generalisation(fitted, None, test, sizes)
    as_dict = generalisation({k: fitted.truncate(k) for k in sizes}, train, test, sizes, batch_size=3)
    for k in (1, 2, 3):
        assert math.isclose(refit[k], result[k], rel_tol=1e-8)
        assert math.isclose(truncated[k], result[k], rel_tol=1e-12)
        assert math.isclose(as_dict[k], result[k], rel_tol=1e-12)
    with pytest.raises(ValueError, match="at most the model's 6 components, got 7"):
        generalisation(fitted, None, test, [7])
    with pytest.raises(ValueError, match=r"missing \[3\]"):
        generalisation({1: fitted}, train, test, [1, 3])


class EncodeDecode:
    """A model with encode/decode only (the autoencoder interface)."""

    def __init__(self, pca):
        self.pca = pca

    def encode(self, x):
        return self.pca.encode(x)

    def decode(self, z):
        return self.pca.decode(z)


def test_reconstruct_uses_encode_decode():
    x, *_ = subspace_faces(10, 5, [4.0, 1.0], seed=6)
    model = PCAModel.fit(x, num_components=2)
    torch.testing.assert_close(reconstruct(EncodeDecode(model), x), model.reconstruct(x))
    with pytest.raises(TypeError, match="reconstruct"):
        reconstruct(object(), x)


def nearest_reference(samples, train):
    """Slow reference: every (sample, face) pair in Python loops."""
    s, t = samples.numpy(), train.numpy()
    dist, idx = [], []
    for i in range(s.shape[0]):
        best, arg = math.inf, -1
        for j in range(t.shape[0]):
            d = float(np.mean([np.linalg.norm(s[i, v] - t[j, v]) for v in range(s.shape[1])]))
            if d < best:
                best, arg = d, j
        dist.append(best)
        idx.append(arg)
    return np.array(dist), np.array(idx)


@pytest.mark.parametrize("chunk_elements", [2**24, 30, 1])
def test_nearest_face_distance_against_loop(chunk_elements):
    g = torch.Generator().manual_seed(7)
    samples, train = torch.randn(7, 10, 3, generator=g, dtype=torch.float64), torch.randn(9, 10, 3, generator=g, dtype=torch.float64)
    dist, idx = nearest_face_distance(samples, train, chunk_elements=chunk_elements)
    ref_dist, ref_idx = nearest_reference(samples, train)
    np.testing.assert_allclose(dist.numpy(), ref_dist, rtol=1e-12)
    np.testing.assert_array_equal(idx.numpy(), ref_idx)


class Memoriser:
    """Samples training faces (optionally shifted rigidly by ``offset``)."""

    def __init__(self, train, offset):
        self.train, self.offset = train, offset

    def sample(self, n, generator=None):
        pick = torch.randint(0, self.train.shape[0], (n,), generator=generator)
        return self.train[pick] + self.offset


class Noise:
    """Samples around the mean with i.i.d. Gaussian noise of the data's total scale."""

    def __init__(self, mean, scale):
        self.mean, self.scale = mean, scale

    def sample(self, n, generator=None):
        return self.mean + self.scale * torch.randn(n, *self.mean.shape, generator=generator, dtype=self.mean.dtype)


def test_specificity_analytic_cases():
    x, mean, *_ = subspace_faces(40, 15, [400.0, 100.0, 25.0], seed=8)
    g = torch.Generator().manual_seed(9)
    assert specificity(Memoriser(x, 0.0), x, 50, generator=g) == 0.0
    offset = torch.tensor([0.03, -0.04, 0.12], dtype=torch.float64)  # |offset| = 0.13
    # premise: faces are more than 2 |offset| apart, so a shifted face's nearest face is itself
    pair = torch.linalg.norm(x[:, None] - x[None], dim=-1).mean(dim=-1) + 1e9 * torch.eye(40, dtype=torch.float64)
    assert pair.min() > 0.26
    res = specificity(Memoriser(x, offset), x, 50, generator=g, return_all=True, batch_size=7)
    assert math.isclose(res["mean"], 0.13, rel_tol=1e-12) and res["std"] < 1e-12
    assert res["distances"].shape == (50,) and res["nearest"].shape == (50,)


def test_specificity_pca_samples_close_noise_far():
    x, mean, *_ = subspace_faces(300, 15, [400.0, 100.0, 25.0], seed=10)
    model = PCAModel.fit(x, num_components=3)
    spec = specificity(model, x, 200, generator=torch.Generator().manual_seed(11), chunk_elements=5000)
    scale = math.sqrt(float(model.total_variance) / x[0].numel())  # matches the data's per-coordinate std
    noise = specificity(Noise(mean, scale), x, 200, generator=torch.Generator().manual_seed(12))
    assert 0 < spec < noise / 4
    # same samples through the loop reference
    samples = model.sample(5, generator=torch.Generator().manual_seed(13))
    ref_dist, _ = nearest_reference(samples, x[:60])
    dist, _ = nearest_face_distance(samples, x[:60], chunk_elements=100)
    np.testing.assert_allclose(dist.numpy(), ref_dist, rtol=1e-12)
    with pytest.raises(TypeError, match=r"sample\(n, generator\)"):
        specificity(object(), x)


def test_empty_test_set_and_batch_sizes_below_one_are_refused():
    seed = int(np.random.default_rng().integers(1 << 30))
    x, *_ = subspace_faces(30, 10, [9.0, 4.0, 1.0], seed=seed)
    fitted = PCAModel.fit(x[:25], num_components=3)
    with pytest.raises(ValueError, match=r"^test: expected at least one held-out face with vertices, got shape "
                                         r"\(0, 10, 3\)$"):
        generalisation(fitted, None, x[:0], [1, 2])
    bad = int(np.random.default_rng(seed).integers(-5, 1))
    with pytest.raises(ValueError, match=rf"^batch_size: expected an integer >= 1, got {bad}$"):
        generalisation(fitted, None, x[25:], [1, 2], batch_size=bad)
    with pytest.raises(ValueError, match=rf"^batch_size: expected an integer >= 1, got {bad}$"):
        specificity(fitted, x, 10, batch_size=bad)
    with pytest.raises(TypeError, match=r"^batch_size: expected an integer, got 2.5 \(float\)$"):
        specificity(fitted, x, 10, batch_size=2.5)
    with pytest.raises(ValueError, match=rf"^num_samples: expected an integer >= 1, got {bad}$"):
        specificity(fitted, x, bad)
    # any batch size >= 1 gives the same answers
    batch = int(np.random.default_rng(seed).integers(1, 7))
    whole = generalisation(fitted, None, x[25:], [1, 2])
    assert generalisation(fitted, None, x[25:], [1, 2], batch_size=batch) == pytest.approx(whole, rel=1e-12)
    for k in (1, 2):
        assert math.isclose(whole[k], projection_errors_reference(x[:25], x[25:], k), rel_tol=1e-8)


def test_nearest_face_distance_with_non_finite_values():
    """A NaN sample gets distance NaN; a training face with NaN is an error (it made the answer depend
    on chunk_elements: inf for every sample in one block, the face skipped in several)."""
    g = torch.Generator().manual_seed(41)
    samples = torch.randn(5, 10, 3, generator=g, dtype=torch.float64)
    train = torch.randn(6, 10, 3, generator=g, dtype=torch.float64)
    j = int(torch.randint(6, (), generator=g))
    broken = train.clone()
    broken[j, 3, 0] = float("nan")
    for chunk in (2**24, 30, 1):
        with pytest.raises(ValueError, match=rf"^train: expected finite vertices, found NaN or infinity in 1 of 6 "
                                             rf"faces \(first: face {j}\)$"):
            nearest_face_distance(samples, broken, chunk_elements=chunk)
    i = int(torch.randint(5, (), generator=g))
    nan_sample = samples.clone()
    nan_sample[i, 7, 2] = float("nan")
    ref_dist, ref_idx = nearest_reference(samples, train)
    for chunk in (2**24, 30, 1):
        dist, idx = nearest_face_distance(nan_sample, train, chunk_elements=chunk)
        assert torch.isnan(dist[i])
        keep = np.arange(5) != i
        np.testing.assert_allclose(dist.numpy()[keep], ref_dist[keep], rtol=1e-12)
        np.testing.assert_array_equal(idx.numpy()[keep], ref_idx[keep])
    with pytest.raises(ValueError, match="train: expected finite vertices"):
        specificity(Memoriser(train, 0.0), broken, 4)


def test_generalisation_sizes_must_be_positive_integers():
    x, *_ = subspace_faces(20, 8, [9.0, 4.0, 1.0], seed=42)
    fitted = PCAModel.fit(x[:15], num_components=3)
    for bad in ([1.9, 2], [True], [0, 1], [], 3, "12", [2, "3"]):
        with pytest.raises(ValueError, match=r"^sizes: expected a non-empty list of positive integers, got "):
            generalisation(fitted, None, x[15:], bad)
    assert list(generalisation(fitted, None, x[15:], (np.int64(2), torch.tensor(1)))) == [2, 1]


def test_compactness_refuses_non_finite_variances_and_reads_half_models():
    with pytest.raises(ValueError, match=r"^source: expected finite non-negative variances, got \[3.0, inf\]$"):
        compactness(np.array([3.0, np.inf]))
    with pytest.raises(ValueError, match=r"^source: expected finite non-negative variances, got \[3.0, nan, 1.0\]$"):
        compactness(np.array([3.0, np.nan, 1.0]))
    latents = np.random.default_rng(43).normal(size=(6, 3))
    latents[4, 1] = np.nan  # a diverged autoencoder's codes: the message named total_variance
    with pytest.raises(ValueError, match=r"^source: expected finite latent codes, found NaN or infinity in 1 of 6 "
                                         r"codes \(first: code 4\)$"):
        compactness(latents)
    # a float16 model of millimetre data: its variances and total overflow, its ratios do not
    x, *_ = subspace_faces(20, 60, [9e4, 4e4, 1e4], seed=44)
    model = PCAModel.fit(x.float(), num_components=4)
    expected = compactness(model)
    half = model.to(torch.float16)
    assert not torch.isfinite(half.total_variance)
    np.testing.assert_allclose(compactness(half), expected, rtol=2e-3)
    np.testing.assert_allclose(compactness(half.truncate(2)), expected[:2], rtol=2e-3)


def test_compactness_refuses_a_total_below_the_sum_of_the_variances():
    """A given total below the variances' sum gave fractions above 1 (an infinite one, all zeros)."""
    rng = np.random.default_rng(45)
    variances = rng.uniform(0.5, 3.0, size=5)
    captured = float(variances.sum())
    for total in (0.5 * captured, captured * (1 - 1e-4), np.inf):
        with pytest.raises(ValueError, match=rf"^total_variance: expected a finite value at least the sum of the 5 "
                                             rf"variances, {re.escape(f'{captured:.6g}')} \(a smaller total gives "
                                             rf"fractions above 1\), got {re.escape(f'{total:.6g}')}$"):
            compactness(variances, total_variance=total)
    # rounding below the sum is tolerated; a larger total (variance the components miss) ends below 1
    assert compactness(variances, total_variance=captured * (1 - 1e-9))[-1] == pytest.approx(1.0, rel=1e-8)
    assert compactness(variances, total_variance=2.0 * captured)[-1] == pytest.approx(0.5, rel=1e-12)
    # the same for a PCA model given a total
    x, *_ = subspace_faces(20, 8, [9.0, 4.0, 1.0], seed=46)
    model = PCAModel.fit(x, num_components=3)
    explained = float(model.explained_variance.double().sum())
    with pytest.raises(ValueError, match=r"^total_variance: expected a finite value at least the sum of the 3 "):
        compactness(model, total_variance=0.9 * explained)
    np.testing.assert_allclose(compactness(model, total_variance=float(model.total_variance)), compactness(model),
                               rtol=1e-6)
