"""Shared helpers of the training tests: a tiny config on a 600-vertex face with a 2-level hierarchy."""

from __future__ import annotations

import copy

import pytest


@pytest.fixture(scope="session")
def hierarchy_cache(tmp_path_factory):
    """One hierarchy cache folder for the whole session (each hierarchy is built once)."""
    return str(tmp_path_factory.mktemp("hierarchy_cache"))


@pytest.fixture
def tiny_config(hierarchy_cache):
    """A factory of small valid configs: ``tiny_config(training={"epochs": 3})`` merges the sections given."""

    def make(**sections):
        config = {
            "template": {"kind": "face", "vertices": 600, "seed": 0},
            "hierarchy": {"factors": [2, 2], "spiral_length": 9, "cache_dir": hierarchy_cache},
            "data": {"source": "synthetic", "n": 40, "seed": 3},
            "model": {"decoder": "spiral", "channels": [8, 16], "latent_size": 8},
            "training": {"epochs": 2, "batch_size": 8, "lr": 2e-3, "seed": 5},
        }
        for name, values in sections.items():
            config.setdefault(name, {}).update(copy.deepcopy(values))
        return config

    return make
