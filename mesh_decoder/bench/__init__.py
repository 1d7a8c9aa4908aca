"""Throughput benchmarks of the decoders: timing, roofs, the harness, reports, ONNX export.

``mesh-decoder bench`` (or ``python -m mesh_decoder.bench.harness``) runs the
harness; see :mod:`mesh_decoder.bench.harness`.
"""

from .onnx_export import OnnxRunner, export_onnx
from .roofline import (
    DecoderCost,
    LayerCost,
    copy_bandwidth,
    decoder_cost,
    gemm_bound,
    matmul_roof,
    precision,
    register_cost,
)
from .timing import TimingResult, synchronize, time_fn, time_interleaved

__all__ = [
    "DecoderCost",
    "LayerCost",
    "OnnxRunner",
    "TimingResult",
    "copy_bandwidth",
    "decoder_cost",
    "export_onnx",
    "gemm_bound",
    "matmul_roof",
    "precision",
    "register_cost",
    "synchronize",
    "time_fn",
    "time_interleaved",
]
