#!/usr/bin/env bash
# The prepared GPU check of kernels/ (docs/kernels.md, "On a GPU"): the kernel tests compiled for the GPU and each
# GPU benchmark package on its own (one that fails or runs out of time costs only its own rows), in order of what
# issue 15 still needs measured, within one time budget: a device call runs 10 minutes at most and a session has
# 15 minutes of device time, so stages that do not fit are skipped (and say so), not cut off mid-way.
#
#   scripts/gpu_check.sh OUTDIR            # env.txt, tests.txt, bench.txt, kernels.csv/.md, oneshot-gpu.csv/.md
#
# Stages: 1. the banded kernels' tests; 2. the banded Triton benchmark; 3. the other kernel tests; 4. the other
# kernel benchmarks (sparse GEMV, 2:4, the CUDA banded forward); 5. the one-shot pruning and GPT-2 variant
# benchmarks. OUTDIR/kernels.csv starts as docs/benchmarks/kernels.csv and gets this GPU's rows merged in (per
# device and op); copy it and kernels.md back to docs/benchmarks/ to publish them. Environment: PYTHON (python3),
# BUDGET (seconds for the whole script, 540), TEST_TIMEOUT (seconds per test stage, 240), TEST_WORKERS (8),
# BENCH_TIMEOUT (seconds per benchmark, 150), BENCH_ARGS (extra arguments of scripts.bench_kernels, e.g. --quick),
# BENCHES (kernel benchmark packages, default all four, the banded Triton one first).
set -u
out=${1:?usage: scripts/gpu_check.sh OUTDIR}
py=${PYTHON:-python3}
budget=${BUDGET:-540}
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

# stage NAME LIMIT LOG CMD...: CMD under min(LIMIT, the budget left), appending to LOG; skipped under 30 s left
stage() {
    local name=$1 limit=$2 log=$3 left tick
    shift 3
    left=$((budget - SECONDS))
    if ((left < 30)); then
        echo "$name: skipped, ${left} s of the budget left"
        return
    fi
    ((limit > left)) && limit=$left
    tick=$SECONDS
    timeout "$limit" "$@" >>"$log" 2>&1
    echo "$name: rc=$? in $((SECONDS - tick)) s (limit $limit s)"
}

pytest_args=(-q -n "${TEST_WORKERS:-8}" -p no:cacheprovider -o addopts="" -rfEs --durations=15)
stage "tests/kernels/banded" "${TEST_TIMEOUT:-240}" "$out/tests.txt" $py -m pytest tests/kernels/banded "${pytest_args[@]}"
tail -n 25 "$out/tests.txt"

cp docs/benchmarks/kernels.csv "$out/kernels.csv" 2>/dev/null
bench() {
    # shellcheck disable=SC2086  # BENCH_ARGS is a list of arguments
    stage "$1" "${BENCH_TIMEOUT:-150}" "$out/bench.txt" $py -m scripts.bench_kernels --gpu-only --gpu-bench "$1" \
        ${BENCH_ARGS:-} --out "$out/kernels.md"
}
benches=${BENCHES:-kernels.banded.bench kernels.sparse_gemv.bench kernels.semi_structured.bench kernels.banded.bench_cuda}
first=${benches%% *}
bench "$first"

stage "tests/kernels (the rest)" "${TEST_TIMEOUT:-240}" "$out/tests.txt" $py -m pytest tests/kernels \
    --ignore=tests/kernels/banded "${pytest_args[@]}"
tail -n 15 "$out/tests.txt"

for b in ${benches#"$first"}; do bench "$b"; done
grep -v "^|" "$out/kernels.md" 2>/dev/null | grep "target reached\|failed"

# SparseGPT / Wanda / magnitude time for one GPT-2 small FC1 layer on the GPU (issue 16's benchmark); its own file
stage "scripts.bench_oneshot" "${BENCH_TIMEOUT:-150}" "$out/bench.txt" $py -m scripts.bench_oneshot \
    --out "$out/oneshot-gpu.md"
# GPT-2 124M: each reciprocal variant's training speed against plain (issue 17's "RA 2.17% faster"); its own file
stage "scripts.bench_variants" "${BENCH_TIMEOUT:-150}" "$out/bench.txt" $py -m scripts.bench_variants \
    --set "GPT2_SIZE=124m BATCH_SIZE=8 PRECISION=bf16" --steps 10 --pairs 4 --out "$out/gpt2_variants-gpu.md"
