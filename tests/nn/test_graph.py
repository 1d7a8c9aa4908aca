"""Tests of mesh_decoder.nn.graph: mesh edges, the layers' shared input checks and the fast-path switches.

``mesh_edge_index`` on fixed meshes is also exercised in test_pyg_conv.py; here it meets random polygons.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from mesh_decoder.nn import fast_paths_enabled, mesh_edge_index, plain_formulation
from mesh_decoder._checks import positive_int
from mesh_decoder.nn.graph import (
    FLOAT_DTYPES,
    bag_product,
    check_features,
    hierarchy_level,
    inference_fast_path,
    records_grad,
    under_func_transform,
    update_buffer,
)
from tests.nn.reference import edge_set

DEVICES = ["cpu"] + ([pytest.param("cuda", marks=pytest.mark.cuda)] if torch.cuda.is_available() else [])
CPU = torch.device("cpu")


def random_polygons(seed: int, V: int = 30, F: int = 25, k: int = 3) -> torch.Tensor:
    """``(F, k)`` int64 random faces, some degenerate (a repeated corner) and one duplicated."""
    g = torch.Generator().manual_seed(seed)
    faces = torch.randint(0, V, (F, k), generator=g)
    faces[: F // 4, 1] = faces[: F // 4, 0]  # degenerate: a self loop to drop
    faces[-1] = faces[0]  # a duplicate face
    return faces


def rand(*shape: int, seed: int, dtype=torch.float32) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


# ----------------------------------------------------------------------------- mesh_edge_index
@pytest.mark.parametrize("k", [2, 3, 4, 5])
@pytest.mark.parametrize("seed", [0, 1])
def test_mesh_edge_index_of_random_polygons_matches_the_loop_reference(k, seed):
    V = 30
    faces = random_polygons(seed, V=V, k=k)
    ei = mesh_edge_index(faces, V)
    assert ei.dtype == torch.int64 and ei.shape[0] == 2
    pairs = [tuple(p) for p in ei.t().tolist()]
    assert pairs == sorted(edge_set(faces))  # sorted by source then target, unique, both directions, no loops
    used = set(faces.flatten().tolist())
    assert set(ei.flatten().tolist()) <= used  # vertices in no face (or only in degenerate ones) have no edges


@pytest.mark.parametrize("dtype", [torch.int32, torch.int16, torch.uint8, torch.int64])
def test_mesh_edge_index_takes_every_integer_dtype_and_numpy(dtype):
    faces = random_polygons(2, V=20)
    want = mesh_edge_index(faces, 20)
    got = mesh_edge_index(faces.to(dtype), 20)
    assert got.dtype == torch.int64 and torch.equal(got, want)
    np_faces = faces.numpy().astype(np.int32)[:, ::-1]  # a non-contiguous numpy view, other winding
    assert torch.equal(mesh_edge_index(np_faces, np.int64(20)), want)  # the reversed winding has the same edges


@pytest.mark.parametrize("device", DEVICES)
def test_mesh_edge_index_stays_on_the_faces_device(device):
    faces = random_polygons(3, V=15)
    ei = mesh_edge_index(faces.to(device), 15)
    assert ei.device.type == device
    assert torch.equal(ei.cpu(), mesh_edge_index(faces, 15))


def test_mesh_edge_index_of_no_faces_and_no_vertices():
    for V in (0, 4):
        ei = mesh_edge_index(torch.zeros(0, 3, dtype=torch.int64), V)
        assert ei.shape == (2, 0) and ei.dtype == torch.int64


@pytest.mark.parametrize("faces, error, message", [
    (np.array([[0.0, 1.0, 2.0]]), TypeError, "faces: expected an integer array, got dtype float64"),
    (np.array([[True, False, True]]), TypeError, "faces: expected an integer array, got dtype bool"),
    (torch.tensor([[True, False, True]]), TypeError, "faces: expected an integer tensor, got dtype torch.bool"),
    (torch.ones(1, 3, dtype=torch.complex64), TypeError,
     "faces: expected an integer tensor, got dtype torch.complex64"),
    ([[0, 1, 2]], TypeError, "faces: expected a torch.Tensor, got list"),
    (torch.tensor([[0], [1]]), ValueError, "faces: expected (F, k) with k >= 2 corners, got shape (2, 1)"),
    (torch.tensor([[0, 1, -2]]), ValueError, "faces: expected vertex indices in [0, 5), got range [-2, 1]"),
])
def test_mesh_edge_index_errors_name_the_expected_and_the_found(faces, error, message):
    with pytest.raises(error, match=f"^{re.escape(message)}$"):
        mesh_edge_index(faces, 5)


@pytest.mark.parametrize("V, error, message", [
    (-1, ValueError, "num_vertices: expected a non-negative int, got -1"),
    (True, TypeError, "num_vertices: expected a non-negative int, got bool True"),
    (3.0, TypeError, "num_vertices: expected a non-negative int, got float 3.0"),
    (0, ValueError, "faces: expected vertex indices in [0, 0), got range [0, 2]"),
])
def test_mesh_edge_index_checks_num_vertices(V, error, message):
    with pytest.raises(error, match=f"^{re.escape(message)}$"):
        mesh_edge_index(torch.tensor([[0, 1, 2]]), V)


# ---------------------------------------------------------------------------- shared checks
@pytest.mark.parametrize("value", [1, 7, np.int64(3), np.uint16(2)])
def test_positive_int_gives_a_python_int(value):
    out = positive_int(value, "K")
    assert out == int(value) and type(out) is int


@pytest.mark.parametrize("value, error, message", [
    (0, ValueError, "K: expected a positive int, got 0"),
    (-2, ValueError, "K: expected a positive int, got -2"),
    (True, TypeError, "K: expected a positive int, got bool True"),
    (2.0, TypeError, "K: expected a positive int, got float 2.0"),
    ("3", TypeError, "K: expected a positive int, got str '3'"),
])
def test_positive_int_errors(value, error, message):
    with pytest.raises(error, match=f"^{re.escape(message)}$"):
        positive_int(value, "K")


def test_hierarchy_level_picks_the_level_up_to_the_top_allowed(synthetic_hierarchy):
    h = synthetic_hierarchy  # 4 levels
    for level in range(4):
        assert hierarchy_level(h, level) is h.levels[level]
    assert hierarchy_level(h, np.int64(2), below_coarsest=1) is h.levels[2]
    with pytest.raises(ValueError, match=r"^level: expected an int in \[0, 2\], got 3$"):
        hierarchy_level(h, 3, below_coarsest=1)  # pooling needs level + 1 as well
    for bad in (-1, 4):
        with pytest.raises(ValueError, match=rf"^level: expected an int in \[0, 3\], got {bad}$"):
            hierarchy_level(h, bad)
    for bad in (True, 1.0, "1"):  # the wrong type: a TypeError naming it
        with pytest.raises(TypeError, match=rf"^level: expected an int in \[0, 3\], got {type(bad).__name__} "
                                            rf"{re.escape(repr(bad))}$"):
            hierarchy_level(h, bad)
    with pytest.raises(TypeError, match=r"^hierarchy: expected a MeshHierarchy, got dict$"):
        hierarchy_level({"levels": h.levels}, 0)


@pytest.mark.parametrize("device", DEVICES)
def test_check_features_accepts_batched_and_unbatched_input(device):
    dev = torch.empty(0, device=device).device
    for x in (rand(2, 6, 4, seed=1), rand(6, 4, seed=2)):
        x = x.to(device)
        assert check_features(x, 6, 4, torch.float32, dev) is x
        assert check_features(x, None, None, None, dev) is x  # any size, any float dtype
    for dtype in FLOAT_DTYPES:
        x = rand(3, 5, seed=3, dtype=dtype).to(device)
        assert check_features(x, 3, 5, None, dev) is x


@pytest.mark.parametrize("x, args, error, message", [
    ([1.0], (6, 4, torch.float32), TypeError, "feat: expected a torch.Tensor, got list"),
    (rand(24, seed=4), (6, 4, torch.float32), ValueError, "feat: expected shape (B, 6, 4) or (6, 4), got (24,)"),
    (rand(1, 2, 6, 4, seed=5), (None, None, None), ValueError,
     "feat: expected shape (B, V, C) or (V, C), got (1, 2, 6, 4)"),
    (rand(2, 5, 4, seed=6), (6, 4, torch.float32), ValueError, "feat: expected shape (B, 6, 4), got (2, 5, 4)"),
    (rand(6, 3, seed=7), (6, 4, torch.float32), ValueError, "feat: expected shape (6, 4), got (6, 3)"),
    (rand(2, 6, 3, seed=8), (None, 4, None), ValueError, "feat: expected shape (B, V, 4), got (2, 6, 3)"),
    (rand(6, 4, seed=9, dtype=torch.float64), (6, 4, torch.float32), TypeError,
     "feat: expected dtype torch.float32, got torch.float64"),
    (torch.ones(6, 4, dtype=torch.int64), (6, 4, None), TypeError,
     "feat: expected dtype torch.float16 or torch.bfloat16 or torch.float32 or torch.float64, got torch.int64"),
])
def test_check_features_errors_name_the_expected_and_the_found(x, args, error, message):
    with pytest.raises(error, match=f"^{re.escape(message)}$"):
        check_features(x, *args, CPU, name="feat")


def test_check_features_names_the_layers_device():
    x = rand(6, 4, seed=10)
    with pytest.raises(ValueError, match=r"^x: expected a tensor on meta, got one on cpu$"):
        check_features(x, 6, 4, torch.float32, torch.device("meta"))


def test_check_features_under_autocast_takes_any_float_dtype_only():
    x = rand(6, 4, seed=11, dtype=torch.float64)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert check_features(x, 6, 4, torch.float32, CPU) is x
        with pytest.raises(TypeError, match=r"expected dtype torch.float16 or .*, got torch.int32$"):
            check_features(x.int(), 6, 4, torch.float32, CPU)
        with pytest.raises(ValueError, match=r"expected shape \(6, 3\), got \(6, 4\)"):
            check_features(x, 6, 3, torch.float32, CPU)
    with pytest.raises(TypeError, match="expected dtype torch.float32, got torch.float64"):
        check_features(x, 6, 4, torch.float32, CPU)  # autocast over: the layer's dtype again


# --------------------------------------------------------------------------- fast-path switch
def test_plain_formulation_nests_and_restores_after_an_error():
    assert fast_paths_enabled()
    with plain_formulation():
        assert not fast_paths_enabled()
        with plain_formulation():
            assert not fast_paths_enabled()
        assert not fast_paths_enabled()  # the inner block restores the outer one's state
    assert fast_paths_enabled()
    with pytest.raises(KeyError):
        with plain_formulation():
            raise KeyError("inside")
    assert fast_paths_enabled()


def test_records_grad():
    a = rand(3, seed=12)
    b = rand(3, seed=13).requires_grad_()
    assert not records_grad() and not records_grad(a, None) and records_grad(a, None, b)
    with torch.no_grad():
        assert not records_grad(a, b)
    with torch.inference_mode():
        assert not records_grad(b)


def test_under_func_transform_sees_vmap_grad_jvp_and_forward_ad():
    x = rand(4, 3, seed=14)
    seen = []

    def f(t):
        seen.append(under_func_transform(t))
        seen.append(under_func_transform())  # the check is global: no input needed
        return t.sin().sum()

    f(x)
    assert seen == [False, False]
    for transform in (torch.vmap(f), torch.func.grad(f), lambda t: torch.func.jvp(f, (t,), (torch.ones_like(t),))):
        seen.clear()
        transform(x)
        assert seen == [True, True]
    import torch.autograd.forward_ad as fwAD

    with fwAD.dual_level():
        seen.clear()
        f(fwAD.make_dual(x, torch.ones_like(x)))
        assert seen == [True, True]
    seen.clear()
    f(x)
    assert seen == [False, False]


def test_under_func_transform_is_false_while_compiling():
    """The compiler sees through vmap itself: a compiled body must not take the transform's detour."""
    torch._dynamo.reset()
    x = rand(3, 2, seed=23)

    def f(t):
        return t * under_func_transform()

    assert torch.equal(torch.vmap(f)(x), x)
    assert torch.vmap(torch.compile(f, backend="eager", fullgraph=True))(x).abs().sum() == 0


@pytest.mark.parametrize("device", DEVICES)
def test_inference_fast_path_only_where_nothing_is_recorded(device):
    x = rand(2, 5, 3, seed=15).to(device)
    w = rand(3, 4, seed=16).to(device).requires_grad_()
    assert inference_fast_path(x)  # x needs no grad
    assert not inference_fast_path(x, w)  # autograd records the parameter
    with torch.no_grad():
        assert inference_fast_path(x, w)
        with plain_formulation():
            assert not inference_fast_path(x, w)
        with torch.autocast(x.device.type, dtype=torch.bfloat16):
            assert not inference_fast_path(x, w)
        assert torch.vmap(lambda t: t * inference_fast_path(t))(x).abs().sum() == 0
    assert not inference_fast_path(x.clone().requires_grad_())


@pytest.mark.filterwarnings("ignore:`torch.jit.trace` is deprecated:DeprecationWarning")
def test_inference_fast_path_steps_aside_while_tracing():
    seen = []

    def f(t):
        seen.append(inference_fast_path(t))
        return t * 2

    x = rand(3, seed=17)
    with torch.no_grad():
        f(x)
        torch.jit.trace(f, (x,), check_trace=False)
    assert seen == [True, False]


# ------------------------------------------------------------------------------ update_buffer
def test_update_buffer_copies_in_place_when_the_shape_fits():
    m = torch.nn.Module()
    m.register_buffer("b", rand(4, 2, seed=18))
    old = m.b
    ptr = old.data_ptr()
    value = rand(4, 2, seed=19, dtype=torch.float64)
    update_buffer(m, "b", value)
    assert m.b is old and m.b.data_ptr() == ptr and m.b.dtype == torch.float32  # same memory, same dtype
    torch.testing.assert_close(m.b, value.float())


def test_update_buffer_replaces_a_buffer_of_another_shape_or_kind():
    m = torch.nn.Module()
    m.register_buffer("b", rand(4, 2, seed=20))
    bigger = rand(5, 2, seed=21)
    update_buffer(m, "b", bigger)
    assert m.b is bigger and "b" in dict(m.named_buffers())
    ints = torch.arange(10).reshape(5, 2)
    update_buffer(m, "b", ints)  # same shape, but integers do not go into a float buffer
    assert m.b is ints and m.b.dtype == torch.int64


# ------------------------------------------------------------------------------- bag_product
def _random_rows(seed: int, V_out: int, V_in: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Compressed rows: ``offsets (V_out,)``, ``col (E,)``, ``weight (E,)`` float64; some rows empty."""
    g = torch.Generator().manual_seed(seed)
    counts = torch.randint(0, 4, (V_out,), generator=g)
    counts[0] = 0  # an empty first row
    offsets = torch.cat([torch.zeros(1, dtype=torch.int64), counts.cumsum(0)[:-1]])
    E = int(counts.sum())
    col = torch.randint(0, V_in, (E,), generator=g)
    weight = torch.randn(E, generator=g, dtype=torch.float64)
    return offsets, col, weight


def _dense(offsets: torch.Tensor, col: torch.Tensor, weight: torch.Tensor, V_in: int) -> torch.Tensor:
    """The sparse matrix ``(V_out, V_in)`` filled by a loop over the rows."""
    V_out = offsets.shape[0]
    ends = offsets.tolist()[1:] + [col.shape[0]]
    M = torch.zeros(V_out, V_in, dtype=weight.dtype)
    for i in range(V_out):
        for e in range(int(offsets[i]), ends[i]):
            M[i, col[e]] = M[i, col[e]] + weight[e]  # out of place: repeated columns add up, gradients flow
    return M


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bag_product_matches_the_dense_matrix_forward_and_backward(seed):
    V_out, V_in, N = 9, 7, 5
    offsets, col, weight = _random_rows(seed, V_out, V_in)
    x = rand(V_in, N, seed=seed + 100, dtype=torch.float64).requires_grad_()
    w = weight.clone().requires_grad_()
    got = bag_product(x, offsets, col, w)
    want = _dense(offsets, col, w, V_in) @ x
    assert got.shape == (V_out, N)
    torch.testing.assert_close(got, want)
    assert got[0].abs().sum() == 0  # the empty row
    go = rand(V_out, N, seed=seed + 200, dtype=torch.float64)
    for a, b in zip(torch.autograd.grad(got, (x, w), go), torch.autograd.grad(want, (x, w), go)):
        torch.testing.assert_close(a, b)


def test_bag_product_of_a_matrix_without_columns():
    offsets, col, weight = _random_rows(3, 6, 4)
    out = bag_product(torch.empty(4, 0), offsets, col, weight.float())
    assert out.shape == (6, 0)
    x = rand(5, 4, seed=22).t()  # a non-contiguous (4, 5) input
    want = _dense(offsets, col, weight, 4).float() @ x
    torch.testing.assert_close(bag_product(x, offsets, col, weight.float()), want)

