#!/usr/bin/env bash
# The accuracy budget against a uniform ratio at the same MACs (docs/balance.md), vgg_small on UC Merced:
#   1. prune --max-drop with --budget-epochs recovery per candidate (scan reused from --sensitivity-file),
#   2. prune --reduce macs=<what 1 removed> with one ratio for every layer, the same criterion and fine-tuning.
# Resumable: a finished step (its result.json) is not run again.
# SEED sets recovery and fine-tuning; the split is BASE's own when BASE records it (bases written before
# checkpoints recorded their split: benchmarks/resave_with_split.py first, else SEED would re-split the data).
#   BASE=runs/cc_vgg_cpu/base-vgg_small-ucmerced64-s0-b30.safetensors DATA=../shared/data/ucmerced \
#   SCAN=results/balance/vgg_small_ucmerced/sensitivity.json OUT=runs/budget bash benchmarks/budget_vs_uniform.sh
set -euo pipefail
PK=${PK:-.venv/bin/prunekit}
MAX_DROP=${MAX_DROP:-1}
EPOCHS=${EPOCHS:-2}
FT=${FT:-20}
SEED=${SEED:-0}
COMMON=(--data "$DATA" --structured --criterion l2 --finetune-epochs "$FT" --seed "$SEED" --no-progress --no-latency)
budget="$OUT/budget-d${MAX_DROP}-e${EPOCHS}-f${FT}-s${SEED}"
[ -f "$budget/result.json" ] || "$PK" prune --model "$BASE" "${COMMON[@]}" --max-drop "$MAX_DROP" \
  --budget-epochs "$EPOCHS" --sensitivity-file "$SCAN" --out "$budget" --json > /dev/null
macs=$(python3 -c "import json,sys; print(round(json.load(open(sys.argv[1]))['pruning']['budget']['macs_reduction'], 4))" \
  "$budget/result.json")
uniform="$OUT/uniform-macs${macs}-f${FT}-s${SEED}"
[ -f "$uniform/result.json" ] || "$PK" prune --model "$BASE" "${COMMON[@]}" --reduce "macs=$macs" \
  --out "$uniform" --json > /dev/null
python3 - "$budget/result.json" "$uniform/result.json" <<'PY'
import json, sys
for path in sys.argv[1:]:
    r = json.load(open(path))
    p, b, a = r["pruning"], r["before"], r["after"]
    how = f"budget {p['budget']['overrides']}" if "budget" in p else f"uniform ratio {p['ratio']}"
    print(f"{path}: test {100 * b['accuracy']:.2f} -> {100 * a['accuracy']:.2f}, MACs {b['macs']} -> {a['macs']}, "
          f"params {b['params']} -> {a['params']}; {how}")
PY
