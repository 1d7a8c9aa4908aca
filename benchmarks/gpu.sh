#!/usr/bin/env bash
# The GPU run, for a machine with CUDA torch but without this project's install
# (no openmesh: the hierarchy comes as a saved .npz, made with save_hierarchy on
# a machine that has openmesh).
#
#   benchmarks/gpu.sh HIERARCHY.npz OUTPUT_DIR
#
# The default run's hierarchy, made beforehand on a machine with the install:
#
#   mesh-decoder hierarchy --factors 4 4 4 4 --spiral-length 9 --texture-size 256 -o .gpu_in/face5023_t256.npz
#
# 1. the CUDA cases of every test file that has them (tests/bench/test_gpu_script.py
#    checks the list, and each benchmark call below, without a GPU);
# 2. the decode benchmark, eager and CUDA graphs, fp32/TF32/bf16/fp16, every decoder;
#    then benchmarks/profile_decode.py on the batch-1 decode of the spiral and joint
#    decoders, fp32 and fp16, eager and CUDA graphs: its kernels, their count and the
#    device's idle time between them (OUTPUT_DIR/profile_*);
# 3. torch.compile, plain and replayed as CUDA graphs (reduce-overhead), for the
#    spiral, joint and reference decoders in bf16 (OUTPUT_DIR/decode-compile_*);
# 4. the variant that multiplies by the spiral weight as stored, with small gather
#    blocks (spiral_conv.LATENCY_ROWS, off by default), CUDA graphs, spiral and
#    joint decoders, fp32 and fp16 (OUTPUT_DIR/decode-latency_*), to compare with
#    step 2's rows;
# 5. the variant that captures the batch-1 latent copy in and output copies out in
#    the CUDA graph itself (harness.CAPTURE_IO, off by default), spiral, joint and
#    PCA decoders, fp32 and fp16 (OUTPUT_DIR/decode-io_*), to compare with step 2's
#    batch-1 rows;
# 6. both variants together (LATENCY_ROWS and CAPTURE_IO), spiral and joint decoders,
#    fp32 and fp16, batch 1 (OUTPUT_DIR/decode-io-latency_*);
# 7. COMA with the embedding_bag products and vertex-major layout on CUDA
#    (cheb_conv.BAG_ON_CUDA, off by default), eager and CUDA graphs, every dtype and
#    batch (OUTPUT_DIR/decode-chebbag_*), to compare with step 2's coma rows.
# The steps' default limits add up to 535 s, a minute under the GPU machine's 600 s
# per command (tests/bench/test_gpu_script.py checks the sum); the last full run took
# about 3 minutes (tests 35 s, step 2 42 s, step 3 61 s).
# Set MESH_DECODER_GIT_COMMIT to the commit of the copied tree when its .git is stale.
# Each step has its own time limit (SIGINT: the benchmark keeps the rows it
# finished); the script exits non-zero if any step failed, after running all.
set -uo pipefail
hierarchy=$1
out=$2
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
status=0
mkdir -p "$out" || exit 1
bench=(python3 -c 'import sys; from mesh_decoder.cli import main; sys.exit(main(sys.argv[1:]))' bench
       --device cuda --hierarchy "$hierarchy" --no-progress)

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
python3 -c 'import torch; print("torch", torch.__version__, torch.cuda.get_device_name())'
timeout "${GPU_TEST_TIMEOUT:-80}" python3 -m pytest -q -p no:cacheprovider -o addopts="" -k cuda \
    tests/nn/test_triton_gather.py tests/nn/test_up_spiral_conv.py tests/nn/test_spiral_conv.py \
    tests/nn/test_decoders.py tests/nn/test_pool.py tests/nn/test_texture.py tests/nn/test_cheb_conv.py \
    tests/nn/test_encoders.py tests/nn/test_graph.py tests/nn/test_pyg_conv.py tests/render/test_rasterize.py \
    tests/fit/test_fit.py tests/test_checks.py tests/bench/test_harness.py \
    > "$out/cuda-tests.txt" 2>&1 || { status=1; echo "CUDA TESTS FAILED"; }
tail -n 12 "$out/cuda-tests.txt"
timeout -s INT "${GPU_BENCH_TIMEOUT:-125}" "${bench[@]}" --modes eager cudagraph --time-box "${GPU_TIME_BOX:-100}" \
    --output-dir "$out" || { status=1; echo "BENCHMARK FAILED"; }
timeout "${GPU_PROFILE_TIMEOUT:-35}" python3 benchmarks/profile_decode.py "$hierarchy" --output-dir "$out" \
    --device cuda --decoders spiralnet++-coma joint --dtypes fp32 fp16 --modes eager cudagraph \
    || { status=1; echo "PROFILE FAILED"; }
timeout -s INT "${GPU_COMPILE_TIMEOUT:-100}" "${bench[@]}" --modes compile compile-cudagraph \
    --decoders spiralnet++-coma joint reference --dtypes bf16 --batch-sizes 1 256 \
    --time-box "${GPU_COMPILE_TIME_BOX:-75}" --output-dir "$out" --file-prefix decode-compile \
    || { status=1; echo "COMPILE BENCHMARK FAILED"; }
variant=(python3 -c 'import sys; from mesh_decoder.nn import spiral_conv; spiral_conv.LATENCY_ROWS = 10**9
from mesh_decoder.cli import main; sys.exit(main(sys.argv[1:]))' bench --device cuda --hierarchy "$hierarchy" --no-progress)
timeout -s INT "${GPU_VARIANT_TIMEOUT:-60}" "${variant[@]}" --modes cudagraph --decoders spiralnet++-coma joint \
    --dtypes fp32 fp16 --time-box "${GPU_VARIANT_TIME_BOX:-40}" --output-dir "$out" --file-prefix decode-latency \
    || { status=1; echo "VARIANT BENCHMARK FAILED"; }
io=(python3 -c 'import sys; from mesh_decoder.bench import harness; harness.CAPTURE_IO = True
from mesh_decoder.cli import main; sys.exit(main(sys.argv[1:]))' bench --device cuda --hierarchy "$hierarchy" --no-progress)
timeout -s INT "${GPU_IO_TIMEOUT:-45}" "${io[@]}" --modes cudagraph --decoders spiralnet++-coma joint pca \
    --dtypes fp32 fp16 --batch-sizes 1 --time-box "${GPU_IO_TIME_BOX:-30}" --output-dir "$out" --file-prefix decode-io \
    || { status=1; echo "IO VARIANT BENCHMARK FAILED"; }
both=(python3 -c 'import sys; from mesh_decoder.bench import harness; harness.CAPTURE_IO = True
from mesh_decoder.nn import spiral_conv; spiral_conv.LATENCY_ROWS = 10**9
from mesh_decoder.cli import main; sys.exit(main(sys.argv[1:]))' bench --device cuda --hierarchy "$hierarchy" --no-progress)
timeout -s INT "${GPU_BOTH_TIMEOUT:-45}" "${both[@]}" --modes cudagraph --decoders spiralnet++-coma joint \
    --dtypes fp32 fp16 --batch-sizes 1 --time-box "${GPU_BOTH_TIME_BOX:-30}" --output-dir "$out" \
    --file-prefix decode-io-latency || { status=1; echo "COMBINED VARIANT BENCHMARK FAILED"; }
chebbag=(python3 -c 'import sys; from mesh_decoder.nn import cheb_conv; cheb_conv.BAG_ON_CUDA = True
from mesh_decoder.cli import main; sys.exit(main(sys.argv[1:]))' bench --device cuda --hierarchy "$hierarchy" --no-progress)
timeout -s INT "${GPU_CHEBBAG_TIMEOUT:-45}" "${chebbag[@]}" --modes eager cudagraph --decoders coma \
    --time-box "${GPU_CHEBBAG_TIME_BOX:-30}" --output-dir "$out" --file-prefix decode-chebbag \
    || { status=1; echo "COMA BAG BENCHMARK FAILED"; }
exit $status
