"""The Triton gather against loops: on CUDA directly, elsewhere in Triton's CPU interpreter."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("triton", reason="Triton is not installed (it ships with CUDA builds of torch)")

from mesh_decoder.nn.triton_gather import weighted_gather_sum  # noqa: E402
from tests.nn.triton_interpret_check import CHECKS, loop_reference  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("check", sorted(CHECKS))
def test_in_the_cpu_interpreter(check):
    """Each check runs in a fresh interpreter process (Triton reads TRITON_INTERPRET when imported)."""
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "tests.nn.triton_interpret_check", check], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"{check}: ok" in proc.stdout


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.bfloat16, 2e-2), (torch.float16, 5e-3)])
@pytest.mark.parametrize("activation", [None, "elu"])
def test_on_cuda_matches_loops(dtype, tol, activation):
    g = torch.Generator().manual_seed(2)
    B, R, C, V, N = 3, 57, 32, 200, 27
    z = torch.randn(B, R, C, generator=g).to(dtype)
    index = torch.randint(0, R, (V, N), generator=g)
    weight = torch.rand(V, N, generator=g) / N
    bias = torch.randn(C, generator=g).to(dtype)
    got = weighted_gather_sum(z.cuda(), index.cuda(), weight.cuda(), bias.cuda(), activation)
    want = loop_reference(z, index, weight, bias, activation)
    torch.testing.assert_close(got.cpu().double(), want, rtol=tol, atol=tol)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.bfloat16, 5e-2)])
def test_gather_project_on_cuda_matches_loops(dtype, tol):
    from mesh_decoder.nn import spiral_bags, spiral_weight_blocks
    from mesh_decoder.nn.triton_gather import gather_project
    from tests.nn.reference import random_spirals, random_up_operator
    from tests.nn.triton_interpret_check import spiral_layer_reference

    g = torch.Generator().manual_seed(4)
    V_in, V_out, S, C, O = 40, 150, 9, 32, 32
    spirals = random_spirals(g, V_out, S)
    up_index, up_weight = random_up_operator(g, V_out, V_in)
    index, weight = spiral_bags(spirals, up_index, up_weight, num_in=V_in)
    W = torch.randn(O, S * C, generator=g) / (S * C) ** 0.5
    bias = torch.randn(O, generator=g)
    x = torch.randn(3, V_in, C, generator=g)
    got = gather_project(x.to("cuda", dtype), index.cuda(), weight.cuda(), spiral_weight_blocks(W, S).to("cuda", dtype),
                         bias.to("cuda", dtype), S, "elu")
    want = spiral_layer_reference(x.to(dtype), spirals, up_index, up_weight, W.to(dtype), bias.to(dtype), "elu")
    torch.testing.assert_close(got.cpu().double(), want, rtol=tol, atol=tol)


def test_argument_errors():
    z = torch.randn(2, 5, 3)
    index = torch.zeros(4, 2, dtype=torch.long)
    with pytest.raises(ValueError, match="activation: expected one of"):
        weighted_gather_sum(z, index, torch.ones(4, 2), activation="relu")
    with pytest.raises(ValueError, match=r"z: expected shape \(B, R, C\) or \(B, V_in, S, C\), got \(5, 3\)"):
        weighted_gather_sum(z[0], index, torch.ones(4, 2))
    with pytest.raises(ValueError, match="block_v: expected a power of two, got 12"):
        weighted_gather_sum(z, index, torch.ones(4, 2), block_v=12)
    with pytest.raises(ValueError, match=r"expected two \(V, N\) tensors, got \(4, 2\) and \(4, 3\)"):
        weighted_gather_sum(z, index, torch.ones(4, 3))


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("compiled", [False, True])
@pytest.mark.parametrize("rows,latency", [(16384, 0), (0, 0), (0, 10**9)])
def test_cuda_decoders_fast_path_equals_plain(compiled, rows, latency, monkeypatch):
    """Spiral and joint decoders on CUDA (Triton gathers, also compiled) equal the plain formulation."""
    from mesh_decoder.nn import JointDecoder, SpiralDecoder, plain_formulation
    from tests.nn.conftest import make_synthetic_hierarchy

    from mesh_decoder.nn import spiral_conv

    monkeypatch.setattr(spiral_conv, "GATHER_PROJECT_ROWS", rows)  # one kernel per layer, or two
    monkeypatch.setattr(spiral_conv, "LATENCY_ROWS", latency)  # the weight as stored, small gather blocks
    torch.manual_seed(3)
    hierarchy = make_synthetic_hierarchy()
    graph = SpiralDecoder.from_hierarchy(hierarchy, latent_size=6, channels=(8, 12), out_channels=6)
    joint = JointDecoder(graph, "mesh", hierarchy.texel_map).cuda()
    run = torch.compile(joint) if compiled else joint
    z = torch.randn(5, 6, device="cuda")
    with torch.inference_mode():
        fast = run(z)
        with plain_formulation():
            plain = joint(z)
    for got, want in zip(fast, plain):
        if got.is_floating_point():
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("latency", [0, 10**9])
def test_cuda_graph_replay_sees_weights_loaded_in_place(latency, monkeypatch):
    """A decoder captured in a CUDA graph, then given other weights by load_state_dict, replays with the new ones."""
    from mesh_decoder.nn import SpiralDecoder, spiral_conv
    from tests.nn.conftest import make_synthetic_hierarchy

    monkeypatch.setattr(spiral_conv, "LATENCY_ROWS", latency)

    torch.manual_seed(5)
    hierarchy = make_synthetic_hierarchy()
    dec = SpiralDecoder.from_hierarchy(hierarchy, latent_size=6, channels=(8, 12)).cuda()
    other = SpiralDecoder.from_hierarchy(hierarchy, latent_size=6, channels=(8, 12)).cuda()
    z = torch.randn(4, 6, device="cuda")
    with torch.inference_mode():
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(2):
                dec(z)
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out = dec(z)
        dec.load_state_dict(other.state_dict())
        graph.replay()
        torch.cuda.synchronize()
        torch.testing.assert_close(out, other(z), rtol=1e-5, atol=1e-5)
