"""Slow, obviously correct references and helpers for the training tests."""

from __future__ import annotations

import numpy as np
import torch


def parameters_of(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"tensors differ: {different[:5]}"


def pca_reconstruction_errors(train: np.ndarray, test: np.ndarray, k: int) -> np.ndarray:
    """Per-vertex errors ``(M, V)`` of the rank-``k`` PCA reconstruction: dense SVD in float64, explicit loops."""
    n, v, _ = train.shape
    data = train.reshape(n, 3 * v).astype(np.float64)  # (N, 3V)
    mean = data.mean(axis=0)
    _, _, vt = np.linalg.svd(data - mean, full_matrices=False)
    basis = vt[:k]  # (k, 3V) orthonormal rows
    errors = np.empty((test.shape[0], v))
    for m in range(test.shape[0]):
        x = test[m].reshape(3 * v).astype(np.float64)
        recon = mean + basis.T @ (basis @ (x - mean))
        for i in range(v):
            d = recon[3 * i:3 * i + 3] - x[3 * i:3 * i + 3]
            errors[m, i] = np.sqrt(d[0] ** 2 + d[1] ** 2 + d[2] ** 2)
    return errors


def autoencoder_errors(model, test: torch.Tensor) -> np.ndarray:
    """Per-vertex errors ``(M, V)`` of the autoencoder, one mesh at a time, in a Python loop over vertices."""
    errors = np.empty(test.shape[:2])
    with torch.no_grad():
        for m in range(test.shape[0]):
            recon = model(test[m:m + 1])[0].double().numpy()  # (V, C)
            x = test[m].double().numpy()
            for i in range(test.shape[1]):
                errors[m, i] = np.sqrt(((recon[i, :3] - x[i, :3]) ** 2).sum())
    return errors
