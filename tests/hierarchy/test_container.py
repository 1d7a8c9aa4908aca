"""MeshHierarchy (the container): MeshHierarchy.to casts like torch.nn.Module.to and copies its meta."""

from __future__ import annotations

import pytest
import torch

from mesh_decoder.hierarchy.build import build_hierarchy
from mesh_decoder.hierarchy.storage import check_hierarchy
from mesh_decoder.mesh.templates import face_template

PARAMS = dict(factors=(4, 4), spiral_lengths=(9, 7, 5), dilations=(1, 2, 1), texture_size=(16, 24))


@pytest.fixture(scope="module")
def hierarchy():
    return build_hierarchy(face_template(500, seed=3), **PARAMS)


def test_to_takes_a_dtype_alone_and_only_floating_dtypes(hierarchy):
    """As torch.nn.Module.to: h.to(torch.float64) casts; an integer dtype is refused, not truncating positions."""
    double = hierarchy.to(torch.float64)
    assert double.levels[0].vertices.dtype == double.up_weight[0].dtype == double.texel_map.weight.dtype == torch.float64
    assert double.levels[0].faces.dtype == torch.int64 and double.texel_map.mask.dtype == torch.bool
    check_hierarchy(double)
    assert torch.equal(double.levels[1].vertices.float(), hierarchy.levels[1].vertices)
    for dtype in (torch.int32, torch.int64, torch.bool, torch.complex64, "float64"):
        with pytest.raises(TypeError, match="dtype: expected a floating torch.dtype"):
            hierarchy.to(dtype=dtype)
    with pytest.raises(TypeError, match="dtype twice"):
        hierarchy.to(torch.float64, torch.float32)
    assert hierarchy.levels[0].vertices.dtype == torch.float32  # unchanged


def test_to_copies_meta(hierarchy):
    copy = hierarchy.to("cpu")
    copy.meta["factors"].append(99)
    copy.meta["sizes"][0] = -1
    assert hierarchy.meta["factors"] == [4, 4] and hierarchy.meta["sizes"][0] == 500


def test_to_refuses_unknown_and_absent_devices_by_name(hierarchy):
    for device in ("gpu0", 3.5, ["cpu"]):
        with pytest.raises(ValueError, match=r"device: expected a torch.device or a device name \('cpu', 'cuda:0', ...\)"):
            hierarchy.to(device)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="device cuda:0: CUDA is not available on this machine"):
            hierarchy.to("cuda:0")
    moved = hierarchy.to(torch.device("cpu"))
    assert torch.equal(moved.levels[1].vertices, hierarchy.levels[1].vertices)


def test_repr_gives_sizes_not_tensors(hierarchy):
    """print(hierarchy) printed every index and weight tensor, hundreds of lines."""
    text = repr(hierarchy)
    assert text.count("\n") == 0 and len(text) < 300 and "tensor(" not in text
    assert f"sizes={hierarchy.sizes}" in text and f"{hierarchy.template_hash[:12]!r}" in text
    level = repr(hierarchy.levels[1])
    assert level.startswith(f"HierarchyLevel(V={hierarchy.sizes[1]}, F={hierarchy.levels[1].faces.shape[0]}, ")
    assert "tensor(" not in level and "\n" not in level
    if hierarchy.texel_map is not None:
        assert repr(hierarchy.texel_map).startswith(f"TexelMap(size={hierarchy.texel_map.size}, covered=")
    assert "torch.float64" in repr(hierarchy.to(torch.float64))
