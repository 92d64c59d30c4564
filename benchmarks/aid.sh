#!/usr/bin/env bash
# The paper's own benchmark (issue 21): the three questions on AID with the settings chosen on UC Merced, unchanged.
# Every step is resumable (one result file per cell; a rerun skips what finished), so stop and rerun at will.
#
#   DEVICE=cpu bash benchmarks/aid.sh pfam            # 1. PFAM / SFP / soft FPGM / unpruned from scratch, params -40%
#   DEVICE=cuda bash benchmarks/aid.sh compare        # 2. criteria at 2x and 3x MACs (prunekit compare)
#   DEVICE=cuda bash benchmarks/aid.sh budget         # 3. accuracy budget (--max-drop 1, 3) vs uniform at equal MACs
#   bash benchmarks/aid.sh report                     # tables (docs/aid/, docs/pfam/) from the cells
#
# SEEDS (default "0 1 2"), TARGETS (compare, default "macs=2x macs=3x"), MODELS (compare, default both) and THREADS (CPU intra-op threads, default: torch's) can be set. resnet18 runs at R18_SIZE
# px, default 128: AID's 150 px images keep 73% of their pixels and the stride-32 network ends on a 4x4 map (64 px:
# 2x2). On 2 CPU cores a 128 px cell takes about 4x a 64 px one, so the CPU runs use R18_SIZE=64, UC Merced's setting.
# Results land in results/pfam/aid_$DEVICE, results/criteria/aid_$DEVICE, results/balance/aid_$DEVICE (work files
# of the budget runs in runs/aid_budget_$DEVICE). The budget's seed-s base is trained unless
# runs/aid_budget_$DEVICE/base-s<seed>/model.safetensors exists (the CPU run reused compare's seed-0 base: same recipe).
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data/aid_sub100}
DEVICE=${DEVICE:-cpu}
SEEDS=${SEEDS:-0 1 2}
R18_SIZE=${R18_SIZE:-128}
TAG=${TAG:-aid}  # names the budget step's folders; TAG=ucmerced DATA=../shared/data/ucmerced reruns UC Merced's
PY=${PY:-.venv/bin/python}
PK=${PK:-.venv/bin/prunekit}
[ -n "${THREADS:-}" ] && export OMP_NUM_THREADS=$THREADS
[ -d "$DATA" ] || { echo "aid.sh: no AID folder at $DATA (set DATA=<folder of class folders>)" >&2; exit 2; }
PFAM=(unpruned pfam_energy fpgm_soft sfp_l2 pfam)   # the cosine form (pfam) last: it collapsed on UC Merced

pfam() {
  for seed in $SEEDS; do
    "$PY" benchmarks/pfam_from_scratch.py --data "$DATA" --model vgg_small --image-size 64 --epochs 30 \
      --seeds "$seed" --targets params=0.4 --methods "${PFAM[@]}" --results "results/pfam/aid_$DEVICE" \
      --name "pfam_aid_$DEVICE" --device "$DEVICE"
    "$PY" benchmarks/pfam_from_scratch.py --data "$DATA" --model torchvision/resnet18 --image-size "$R18_SIZE" --epochs 30 \
      --seeds "$seed" --targets params=0.4 --methods "${PFAM[@]}" --results "results/pfam/aid_$DEVICE" \
      --name "pfam_aid_$DEVICE" --device "$DEVICE"
  done
}

compare() {
  for model in ${MODELS:-vgg_small torchvision/resnet18}; do
    size=64; [ "$model" = vgg_small ] || size=$R18_SIZE
    # shellcheck disable=SC2086
    # UC Merced's protocol (docs/criteria.md): base of seed 0, 20 fine-tuning epochs at peak lr 0.05, SE 2 epochs
    "$PK" compare --data "$DATA" --model "$model" --image-size "$size" --reduce ${TARGETS:-macs=2x macs=3x} \
      --seeds $SEEDS --base-epochs 30 --base-seed 0 --finetune-epochs 20 --finetune-lr 0.05 --attention-epochs 2 \
      --attention-sparsity 1e-3 --no-latency --device "$DEVICE" --no-progress --out "results/criteria/aid_$DEVICE" \
      --name "criteria_aid_${model##*/}"
  done
}

budget() {
  out="runs/${TAG}_budget_$DEVICE"
  for seed in $SEEDS; do
    base="$out/base-s$seed"
    [ -f "$base/model.safetensors" ] || "$PK" train --model vgg_small --data "$DATA" --image-size 64 --epochs 30 \
      --seed "$seed" --device "$DEVICE" --no-progress --out "$base"
    [ -f "$out/sens-s$seed/sensitivity.json" ] || "$PK" sensitivity "$base/model.safetensors" --data "$DATA" \
      --criterion l2 --device "$DEVICE" --no-progress --out "$out/sens-s$seed"
    keep="results/balance/${TAG}_$DEVICE"  # what is committed: the scan and each run's result.json
    mkdir -p "$keep" && cp "$out/sens-s$seed/sensitivity.json" "$keep/sensitivity-s$seed.json"
    for drop in 1 3; do
      BASE="$base/model.safetensors" DATA="$DATA" SCAN="$out/sens-s$seed/sensitivity.json" OUT="$out" SEED="$seed" \
        MAX_DROP="$drop" PK="$PK" bash benchmarks/budget_vs_uniform.sh
      for run in "$out"/budget-d"$drop"-*-s"$seed" "$out"/uniform-*-s"$seed"; do
        [ -f "$run/result.json" ] && cp "$run/result.json" "$keep/$(basename "$run").json"
      done
    done
  done
}

report() {
  for dev in cpu cuda; do
    [ -d "results/pfam/aid_$dev" ] || continue
    "$PY" benchmarks/pfam_from_scratch.py --report-only --results "results/pfam/aid_$dev" --name "pfam_aid_$dev"
    "$PY" benchmarks/aid_vs_ucmerced.py --aid "results/pfam/aid_$dev" --name "pfam_vgg_small_${dev}_vs_ucm_cpu"
    for size in 64 128; do  # UC Merced's resnet18 cells: GPU ones first, the CPU fpgm_soft cells fill in
      "$PY" benchmarks/aid_vs_ucmerced.py --aid "results/pfam/aid_$dev" --model torchvision/resnet18 \
        --image-size "$size" --ucmerced results/pfam/gpu results/pfam/cpu --name "pfam_resnet18_${size}px_${dev}_vs_ucm"
    done
  done
  for dev in cpu cuda; do
    [ -d "results/criteria/aid_$dev/cells" ] || continue
    for model in vgg_small torchvision/resnet18; do
      for t in 2x 3x; do  # against UC Merced's five-seed GPU cells (same protocol, 64 px)
        "$PY" benchmarks/aid_vs_ucmerced.py --aid "results/criteria/aid_$dev/cells" --ucmerced results/criteria/f20_gpu \
          --model "$model" --target "macs=$t" --against best --name "criteria_${model##*/}_${t}_${dev}_vs_ucm_gpu"
      done
    done
  done
  for dev in cpu cuda; do
    [ -d "results/balance/aid_$dev" ] || continue
    "$PY" benchmarks/budget_table.py "results/balance/aid_$dev" --name "budget_vs_uniform_aid_$dev"
  done
  for dev in cpu cuda; do  # UC Merced's rerun by the same step (TAG=ucmerced)
    [ -d "results/balance/ucmerced_$dev" ] || continue
    "$PY" benchmarks/budget_table.py "results/balance/ucmerced_$dev" --name "budget_vs_uniform_ucmerced_$dev" \
      --docs docs/balance
  done
}

case "${1:-}" in
  pfam|compare|budget|report) "$1" ;;
  *) echo "usage: DEVICE=cpu|cuda bash benchmarks/aid.sh pfam|compare|budget|report" >&2; exit 2 ;;
esac
