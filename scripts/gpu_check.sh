#!/usr/bin/env bash
# The prepared GPU check of kernels/ (docs/kernels.md, "On a GPU"): the kernel tests compiled for the GPU, then
# each GPU benchmark package on its own (one that fails or runs out of time costs only its own rows).
#
#   scripts/gpu_check.sh OUTDIR            # env.txt, tests.txt, bench.txt, kernels.csv/.md, oneshot-gpu.csv/.md
#
# OUTDIR/kernels.csv starts as docs/benchmarks/kernels.csv and gets this GPU's rows merged in (per device and op);
# copy it and kernels.md back to docs/benchmarks/ to publish them. Environment: PYTHON (python3), TEST_TIMEOUT
# (seconds for the whole test run, 240), BENCH_TIMEOUT (seconds per benchmark package, 120), BENCH_ARGS (extra
# arguments of scripts.bench_kernels, e.g. --quick), BENCHES (package names, default all four).
set -u
out=${1:?usage: scripts/gpu_check.sh OUTDIR}
py=${PYTHON:-python3}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
# one architecture for the CUDA extension's build: the GPU's own (cpp_extension builds for every visible one)
arch=$($py -c 'import torch; print("%d.%d" % torch.cuda.get_device_capability())') || exit 1
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-$arch}
{
    date -u
    nvidia-smi
    $py -c 'import torch, triton; print("torch", torch.__version__, "cuda", torch.version.cuda, "triton",
        triton.__version__, torch.cuda.get_device_name(), torch.cuda.get_device_capability())'
    command -v nvcc && nvcc --version | tail -2
} >"$out/env.txt" 2>&1
cat "$out/env.txt"

tick=$SECONDS
timeout "${TEST_TIMEOUT:-240}" $py -m pytest tests/kernels -q -n "${TEST_WORKERS:-8}" -p no:cacheprovider \
    -o addopts="" -rfEs --durations=15 >"$out/tests.txt" 2>&1
echo "tests: rc=$? in $((SECONDS - tick)) s"
tail -n 40 "$out/tests.txt"

cp docs/benchmarks/kernels.csv "$out/kernels.csv" 2>/dev/null
benches=${BENCHES:-kernels.sparse_gemv.bench kernels.semi_structured.bench kernels.banded.bench kernels.banded.bench_cuda}
for b in $benches; do
    tick=$SECONDS
    # shellcheck disable=SC2086  # BENCH_ARGS is a list of arguments
    timeout "${BENCH_TIMEOUT:-120}" $py -m scripts.bench_kernels --gpu-only --gpu-bench "$b" ${BENCH_ARGS:-} \
        --out "$out/kernels.md" >>"$out/bench.txt" 2>&1
    echo "$b: rc=$? in $((SECONDS - tick)) s"
done
grep -v "^|" "$out/kernels.md" 2>/dev/null | grep "target reached\|failed"

# SparseGPT / Wanda / magnitude time for one GPT-2 small FC1 layer on the GPU (issue 16's benchmark); its own file
tick=$SECONDS
timeout "${BENCH_TIMEOUT:-120}" $py -m scripts.bench_oneshot --out "$out/oneshot-gpu.md" >>"$out/bench.txt" 2>&1
echo "scripts.bench_oneshot: rc=$? in $((SECONDS - tick)) s"

# GPT-2 124M: each reciprocal variant's training speed against plain (issue 17's "RA 2.17% faster"); its own file
tick=$SECONDS
timeout "${BENCH_TIMEOUT:-120}" $py -m scripts.bench_variants --set "GPT2_SIZE=124m BATCH_SIZE=8 PRECISION=bf16" \
    --steps 10 --pairs 4 --out "$out/gpt2_variants-gpu.md" >>"$out/bench.txt" 2>&1
echo "scripts.bench_variants: rc=$? in $((SECONDS - tick)) s"
