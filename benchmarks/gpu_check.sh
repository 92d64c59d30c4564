#!/usr/bin/env bash
# The GPU checks of issue 32 as one command for a session that is lent a device: the CUDA tests, then the GPU speed
# benchmark (benchmarks/gpu_speed.py), each bounded in time; logs, the JSON results and a tarball land in $OUT.
#
#   device run: bash benchmarks/gpu_check.sh            (timeout_s 595: at most 2 min tests + 7.5 min benchmark)
#   here, after: mkdir -p results/gpu_speed && tar xzf <files_at>/gpu_speed.tgz -C results/gpu_speed
#
# Torch-Pruning is not in the device image. To bring it, here once (the README of the device tool has the recipe):
#   python3 -m pip download --no-deps --only-binary=:all: -d .whl torch-pruning==1.6.1   # .whl/ is git-ignored
# and name .whl in the run's carry; without it the benchmark's Torch-Pruning arm is skipped and says so.
# A rerun resumes: copy the finished cells back into results/gpu_speed/ first (untracked files travel with the tree).
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu_check}
PY=${PY:-python3}
TESTS_S=${TESTS_S:-120}
BENCH_S=${BENCH_S:-360}  # no new cell starts after this; the cell in flight gets up to 90 s more
mkdir -p "$OUT" results/gpu_speed
export PYTHONUNBUFFERED=1 PRUNEKIT_CACHE=${PRUNEKIT_CACHE:-runs/gpu_cache}
if ! $PY -c "import torch_pruning" 2>/dev/null && ls .whl/torch_pruning-*.whl >/dev/null 2>&1; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/torch_pruning-*.whl \
    && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  $PY -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__, 'cudnn', torch.backends.cudnn.version())"
  $PY -c "import torch_pruning as tp; print('torch_pruning', tp.__version__)" 2>&1 | tail -1
} > "$OUT/gpu.txt" 2>&1

# 1. the GPU cases of issue 32 (they decide whether the benchmark's numbers can be trusted); the older CUDA cases
#    (criteria, jobs on CUDA) are benchmarks/gpu_sweeps.sh's lane "tests"
timeout "$TESTS_S" $PY -m pytest tests/test_cuda.py -q -p no:cacheprovider -o addopts='-ra' \
  -k "gpu or graph or guard or compile or auto_multiple or paired" > "$OUT/cuda_tests.log" 2>&1
echo "exit $?" >> "$OUT/cuda_tests.log"

# 2. the benchmark: starts no new cell after BENCH_S seconds; finished cells are kept, a rerun resumes
timeout $((BENCH_S + 90)) $PY benchmarks/gpu_speed.py --budget-s "$BENCH_S" > "$OUT/gpu_speed.log" 2>&1
echo "exit $?" >> "$OUT/gpu_speed.log"
tar czf "$OUT/gpu_speed.tgz" -C results/gpu_speed .
tail -30 "$OUT/gpu_speed.log"
