#!/usr/bin/env bash
# The GPU run, for a machine with CUDA torch but without this project's install
# (no openmesh: the hierarchy comes as a saved .npz built elsewhere with
# `mesh-decoder bench`'s defaults or save_hierarchy).
#
#   benchmarks/gpu.sh HIERARCHY.npz OUTPUT_DIR
#
# 1. the CUDA cases of the layer and decoder tests;
# 2. the decode benchmark, eager and CUDA graphs, fp32/TF32/bf16/fp16, every decoder;
# 3. torch.compile for the spiral, joint and reference decoders in fp32 and bf16
#    (results under OUTPUT_DIR/compile).
set -euo pipefail
hierarchy=$1
out=$2
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
bench() { python3 -c 'import sys; from mesh_decoder.cli import main; sys.exit(main(sys.argv[1:]))' bench \
    --device cuda --hierarchy "$hierarchy" --no-progress "$@"; }

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
python3 -c 'import torch; print("torch", torch.__version__, torch.cuda.get_device_name())'
timeout 180 python3 -m pytest -q -p no:cacheprovider -o addopts="" -k cuda \
    tests/nn/test_up_spiral_conv.py tests/nn/test_spiral_conv.py tests/nn/test_decoders.py tests/nn/test_pool.py \
    | tail -n 15
bench --modes eager cudagraph --time-box "${GPU_TIME_BOX:-240}" --output-dir "$out"
mkdir -p "$out/compile"
bench --modes compile --decoders spiralnet++-coma joint reference --dtypes fp32 bf16 \
    --time-box "${GPU_COMPILE_TIME_BOX:-150}" --output-dir "$out/compile"
