"""Checks of the Triton gather in Triton's CPU interpreter (run by test_triton_gather.py).

Run as a script with ``TRITON_INTERPRET=1`` set before Triton is imported:
``python -m tests.nn.triton_interpret_check CHECK``. Each check raises on a mismatch.
"""

from __future__ import annotations

import os
import sys

import torch

from mesh_decoder.nn import spiral_conv
from mesh_decoder.nn.triton_gather import gather_project, gather_sum_available, weighted_gather_sum


def loop_reference(z, index, weight, bias=None, activation=None):
    """``act(bias + sum_i weight[v, i] * z[b, index[v, i]])`` by loops, in float64."""
    B, _, C = z.shape
    V, N = index.shape
    out = torch.zeros(B, V, C, dtype=torch.float64)
    for b in range(B):
        for v in range(V):
            for i in range(N):
                out[b, v] += float(weight[v, i]) * z[b, int(index[v, i])].double()
    if bias is not None:
        out += bias.double()
    return torch.nn.functional.elu(out) if activation == "elu" else out


def check_kernel() -> None:
    g = torch.Generator().manual_seed(0)
    for B, R, C, V, N in [(1, 9, 3, 70, 1), (3, 40, 5, 65, 3), (2, 30, 32, 10, 27)]:
        z = torch.randn(B, R, C, generator=g)
        index = torch.randint(0, R, (V, N), generator=g)
        weight = torch.rand(V, N, generator=g)
        bias = torch.randn(C, generator=g)
        for b, act in [(None, None), (bias, None), (bias, "elu")]:
            want = loop_reference(z, index, weight, b, act)
            got = weighted_gather_sum(z, index, weight, b, act)
            assert got.shape == (B, V, C) and got.dtype == torch.float32
            torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-5)
        half = weighted_gather_sum(z.to(torch.bfloat16), index.to(torch.int32), weight, bias, "elu")
        assert half.dtype == torch.bfloat16
        want = loop_reference(z.to(torch.bfloat16), index, weight, bias, "elu")
        torch.testing.assert_close(half.double(), want, rtol=2e-2, atol=2e-2)
        for block_v in (1, 16):  # more, smaller programs
            got = weighted_gather_sum(z, index, weight, bias, "elu", block_v=block_v)
            torch.testing.assert_close(got.double(), loop_reference(z, index, weight, bias, "elu"), rtol=1e-5, atol=1e-5)


def check_strided_rows() -> None:
    """``z`` given as a strided ``(B, V_in, S, C)`` view: row ``u * S + j`` is ``z[:, u, j]``."""
    g = torch.Generator().manual_seed(5)
    for B, V_in, S, C, V, N in [(2, 6, 9, 3, 40, 27), (1, 11, 4, 32, 70, 12), (3, 5, 1, 7, 9, 2)]:
        stored = torch.randn(B, V_in, C, S, generator=g)  # channel-major: another layout's projection
        z = stored.transpose(2, 3)  # (B, V_in, S, C), not contiguous
        index = torch.randint(0, V_in * S, (V, N), generator=g)
        weight = torch.rand(V, N, generator=g)
        bias = torch.randn(C, generator=g)
        want = loop_reference(z.reshape(B, V_in * S, C), index, weight, bias, "elu")
        for block_v in (16, 64):
            got = weighted_gather_sum(z, index, weight, bias, "elu", block_v=block_v)
            torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-5)


def spiral_layer_reference(x, spirals, up_index, up_weight, weight, bias, activation=None):
    """Dense up-sampling (identity without ``up_index``), then the spiral convolution by loops."""
    from tests.nn.reference import spiral_conv_reference, up_sample_reference

    fine = x if up_index is None else up_sample_reference(x.double(), up_index, up_weight)
    out = spiral_conv_reference(fine.double(), spirals, weight.double(), bias.double())
    return torch.nn.functional.elu(out) if activation == "elu" else out


def check_gather_project() -> None:
    """The one-kernel layer (gather, up-sample, multiply) against loops, with and without up-sampling."""
    from mesh_decoder.nn import spiral_bags, spiral_weight_blocks
    from tests.nn.reference import random_spirals, random_up_operator

    g = torch.Generator().manual_seed(3)
    for V_in, V_out, S, C, O, up in [(7, 19, 5, 4, 3, True), (30, 30, 9, 32, 3, False), (20, 37, 9, 64, 40, True)]:
        spirals = random_spirals(g, V_out, S)
        up_index, up_weight = random_up_operator(g, V_out, V_in) if up else (None, None)
        index, weight = spiral_bags(spirals, up_index, up_weight, num_in=V_in if up else None)
        W = torch.randn(O, S * C, generator=g) / (S * C) ** 0.5
        bias = torch.randn(O, generator=g)
        x = torch.randn(2, V_in, C, generator=g)
        for act in (None, "elu"):
            got = gather_project(x, index, weight, spiral_weight_blocks(W, S), bias, S, act)
            want = spiral_layer_reference(x, spirals, up_index, up_weight, W, bias, act)
            torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-5)
        half = gather_project(x.half(), index, weight, spiral_weight_blocks(W, S).half(), bias.half(), S, "elu")
        assert half.dtype == torch.float16
        torch.testing.assert_close(half.double(), spiral_layer_reference(x, spirals, up_index, up_weight, W, bias,
                                                                         "elu"), rtol=1e-2, atol=1e-2)


def _dispatched(fn):
    """``fn()``'s result and the names of the aten operators it ran, inside custom operators too."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        out = fn()
    return out, [event.name for event in prof.events()]


def check_sixteen_bit_weights() -> None:
    """Both kernels read 16-bit gather weights as kept, converting each to fp32 as they load it: the same
    result as the weights converted beforehand, and no converted copy per call (a kernel launch on the GPU)."""
    from mesh_decoder.nn import spiral_bags, spiral_weight_blocks
    from tests.nn.reference import random_spirals, random_up_operator

    g = torch.Generator().manual_seed(6)
    B, R, C, V, N = 2, 40, 8, 65, 27
    z = torch.randn(B, R, C, generator=g).half()
    index = torch.randint(0, R, (V, N), generator=g)
    spirals = random_spirals(g, V, 9)
    up_index, up_weight = random_up_operator(g, V, 20)
    bags, bag_weight = spiral_bags(spirals, up_index, up_weight, num_in=20)  # (V, 27) each
    x = torch.randn(B, 20, C, generator=g).half()
    blocks = spiral_weight_blocks(torch.randn(5, 9 * C, generator=g) / (9 * C) ** 0.5, 9).half()
    for dtype in (torch.float16, torch.bfloat16):
        weight = torch.rand(V, N, generator=g).to(dtype)
        got, ops = _dispatched(lambda: weighted_gather_sum(z, index, weight, None, "elu"))
        assert torch.equal(got, weighted_gather_sum(z, index, weight.float(), None, "elu"))
        assert "aten::_to_copy" not in ops, ops
        kept = bag_weight.to(dtype)
        got, ops = _dispatched(lambda: gather_project(x, bags, kept, blocks, None, 9, "elu"))
        assert torch.equal(got, gather_project(x, bags, kept.float(), blocks, None, 9, "elu"))
        assert "aten::_to_copy" not in ops, ops


def _joint_fast_equals_plain(dtype: torch.dtype, tol: float) -> None:
    """A joint decoder's inference path, with CPU tensors routed to the kernel, equals its plain path."""
    from mesh_decoder.nn import JointDecoder, SpiralDecoder, plain_formulation
    from tests.nn.conftest import make_synthetic_hierarchy

    spiral_conv._triton_device = lambda t: True  # CPU tensors take the CUDA path (texture asks spiral_conv)
    torch.manual_seed(1)
    hierarchy = make_synthetic_hierarchy()
    graph = SpiralDecoder.from_hierarchy(hierarchy, latent_size=6, channels=(8, 12), out_channels=6)
    joint = JointDecoder(graph, "mesh", hierarchy.texel_map).to(dtype)
    z = torch.randn(3, 6, dtype=dtype)
    with torch.inference_mode():
        with plain_formulation():
            plain = joint(z)
        # one kernel per layer; product + gather kernel; the weight as stored + gather kernel
        for rows, latency in ((16384, 0), (0, 0), (0, 10**9)):
            spiral_conv.GATHER_PROJECT_ROWS = rows
            spiral_conv.LATENCY_ROWS = latency
            for got, want in zip(joint(z), plain):
                if got.is_floating_point():
                    assert got.dtype == dtype
                    torch.testing.assert_close(got, want, rtol=tol, atol=tol)


def check_wiring() -> None:
    """The decoder's inference path through the kernel equals the plain one."""
    _joint_fast_equals_plain(torch.float32, 1e-5)


def check_fp64_stays_plain() -> None:
    """The kernel computes in fp32: an fp64 decoder on its device takes the plain path, to fp64 precision."""
    _joint_fast_equals_plain(torch.float64, 1e-12)


CHECKS = {"kernel": check_kernel, "strided_rows": check_strided_rows, "gather_project": check_gather_project,
          "wiring": check_wiring, "fp64_stays_plain": check_fp64_stays_plain,
          "sixteen_bit_weights": check_sixteen_bit_weights}

if __name__ == "__main__":
    if os.environ.get("TRITON_INTERPRET") != "1" or not gather_sum_available(torch.empty(0)):
        sys.exit("run with TRITON_INTERPRET=1 and Triton installed")
    CHECKS[sys.argv[1]]()
    print(f"{sys.argv[1]}: ok")
