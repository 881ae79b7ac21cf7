#!/usr/bin/env bash
# Issue 15's GPU measurements in one time-boxed run (<= 200 s on an H200), rows in priority order:
#   1. GPT-2-small (random, 12 layers, d=768, vocab 50257), batch 8 x segment 128, 10 memory tokens,
#      8, 32 then 2 segments: the published algorithm (baseline) vs rmt default vs checkpointing off
#   1b. the recomputation schemes (rmt/modeling/checkpointing.py) at batch 8 x segment 128, 8 and
#      32 segments: off, full, partial (the first half of the segments), mlp, auto: tok/s, peak
#   2. batch 16 x segment 512, 16 memory tokens, 8 then 2 segments: the same three as row 1
#   3. the default tiny `rmt-train` (no arguments) for 60 s: steps/s, data-wait share
#   4. ARMT vs RMT, GPT-2-small, batch 8 x segment 128 x 8 segments (issue 16 item 6)
#   5. batched scoring (rmt-eval's answer path, `scripts/bench_eval.py`), GPT-2-small, segment 512,
#      16 memory tokens, batch 8 then 32, 4k-128k input tokens, 8 answer tokens: samples/s
#   6. the same with `compile=true` (torch.compile of the segment step), batch 8, 4k-32k
# Rows 1-4: full BPTT, labels on the last 4 tokens, bf16 autocast, AdamW, medians of 5 timed steps
# after 2 warm-up steps, MFU against the card's bf16 peak. Rows 5-6: bf16 weights, inference,
# medians of 3 timed batches after a warm-up. Results: OUT/*.json, OUT/*.log and OUT/summary.md.
# Each row gets its own time box, cut to what is left of the budget; the default budget (200 s)
# ends within row 2, and --budget 450 leaves room for every row.
#
#   scripts/gpu_speed.sh OUT [--smoke] [--wheels DIR] [--budget SECONDS]
#   --smoke: tiny sizes on the CPU (checks that every row runs; seconds, not numbers)
#   --wheels DIR: pip-installs hydra-core/omegaconf/antlr4 from DIR (no index) when missing
set -u
OUT=${1:?usage: scripts/gpu_speed.sh OUT [--smoke] [--wheels DIR] [--budget SECONDS]}
shift
SMOKE=0 WHEELS="" BUDGET=200
while [ $# -gt 0 ]; do
  case $1 in
    --smoke) SMOKE=1 ;;
    --wheels) WHEELS=$2; shift ;;
    --budget) BUDGET=$2; shift ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-python3}
export PYTHONPATH="$ROOT:$ROOT/.gpu_speed_deps${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
mkdir -p "$OUT"
START=$SECONDS
RESERVE=8  # seconds kept for the summary

left() { echo $((BUDGET - (SECONDS - START) - RESERVE)); }

# row NAME BOX cmd...: run cmd under min(BOX, what is left) seconds; stdout -> NAME.json
row() {
  local name=$1 box=$2 t
  shift 2
  t=$(left)
  [ "$box" -lt "$t" ] && t=$box
  if [ "$t" -lt 10 ]; then
    echo "[gpu_speed] $name: skipped, ${t}s left of the budget" | tee -a "$OUT/rows.txt"
    return
  fi
  local began=$SECONDS
  timeout -k 3 "$t" "$@" >"$OUT/$name.json" 2>"$OUT/$name.log"
  echo "[gpu_speed] $name: exit $? after $((SECONDS - began))s (box ${t}s)" | tee -a "$OUT/rows.txt"
}

if [ -n "$WHEELS" ] && ! "$PY" -c "import hydra, omegaconf" 2>/dev/null; then
  "$PY" -m pip install -q --no-deps --no-index --target "$ROOT/.gpu_speed_deps" \
    "$WHEELS"/*.whl >"$OUT/wheels.log" 2>&1 || echo "[gpu_speed] wheels: see wheels.log"
fi
"$PY" - >"$OUT/machine.json" 2>&1 <<'EOF'
import json, os, torch, transformers
info = {"torch": torch.__version__, "transformers": transformers.__version__,
        "cuda": torch.cuda.is_available(), "cpus": os.cpu_count(), "load": os.getloadavg()}
if torch.cuda.is_available():
    info["gpu"] = torch.cuda.get_device_name(0)
    info["gpu_memory_gb"] = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
print(json.dumps(info))
EOF

BENCH=("$PY" "$ROOT/scripts/bench_train.py" --isolate none --answer-tokens 4)
if [ "$SMOKE" = 1 ]; then
  GPT=(--backbone tiny --device cpu --dtype fp32 --steps 5 --warmup 1 --threads 1)
  S1=(--batch-size 2 --segment-size 16 --mem-tokens 4 --segments 2,4)
  S2=(--batch-size 2 --segment-size 32 --mem-tokens 4 --segments 2)
  RECIPE_S=5 OVERHEAD=90 ARMT_BOX=90 SCHEME_BOX=180  # a loaded 2-core CPU: all is slow
  EVAL=(--backbone tiny --device cpu --dtype fp32 --threads 1 --segment-size 32 --mem-tokens 4
        --lengths 256,1k --repeats 1 --new-tokens 2)
  EVAL_B=(--batches 2,4) COMPILED=(--batches 2 --compile --compile-backend eager) EVAL_BOX=90
else
  GPT=(--backbone gpt2-small --device cuda --dtype bf16 --steps 5 --warmup 2)
  S1=(--batch-size 8 --segment-size 128 --mem-tokens 10 --segments 8,32,2)
  S2=(--batch-size 16 --segment-size 512 --mem-tokens 16 --segments 8,2)
  RECIPE_S=60 OVERHEAD=30 ARMT_BOX=30 SCHEME_BOX=90  # OVERHEAD: the recipe's setup + final validation
  EVAL=(--backbone gpt2-small --device cuda --dtype bf16 --lengths 4k,8k,16k,32k,64k,128k --repeats 3)
  EVAL_B=(--batches 8,32) COMPILED=(--batches 8 --lengths 4k,8k,16k,32k --compile) EVAL_BOX=55
fi

row r1_b8_s128 75 "${BENCH[@]}" "${GPT[@]}" "${S1[@]}" --baseline --out "$OUT/r1"
SCHEME_SEGMENTS=$([ "$SMOKE" = 1 ] && echo 2,4 || echo 8,32)
row r1b_schemes "$SCHEME_BOX" "${BENCH[@]}" "${GPT[@]}" "${S1[@]}" --segments "$SCHEME_SEGMENTS" \
  --schemes off,full,partial,mlp,auto --out "$OUT/r1b"
row r2_b16_s512 45 "${BENCH[@]}" "${GPT[@]}" "${S2[@]}" --baseline --out "$OUT/r2"
t=$(($(left) - OVERHEAD))  # the recipe's setup and final validation come on top of its fit
[ "$t" -gt "$RECIPE_S" ] && t=$RECIPE_S
if [ "$t" -ge 5 ]; then
  row r3_recipe $((t + OVERHEAD)) "$PY" "$ROOT/scripts/bench_recipe.py" --seconds "$t" --out "$OUT/r3"
else
  echo "[gpu_speed] r3_recipe: skipped, too little budget left" | tee -a "$OUT/rows.txt"
fi
ARMT=("${S1[@]}")
ARMT[${#ARMT[@]}-1]=$([ "$SMOKE" = 1 ] && echo 2 || echo 8)  # one segment count: 8 on the GPU
row r4_armt "$ARMT_BOX" "${BENCH[@]}" "${GPT[@]}" "${ARMT[@]}" --memory rmt,armt --checkpointing off \
  --out "$OUT/r4"

EVAL_PY=("$PY" "$ROOT/scripts/bench_eval.py" --isolate none)
row r5_eval "$EVAL_BOX" "${EVAL_PY[@]}" "${EVAL[@]}" "${EVAL_B[@]}" --out "$OUT/r5"
row r6_eval_compiled "$EVAL_BOX" "${EVAL_PY[@]}" "${EVAL[@]}" "${COMPILED[@]}" --out "$OUT/r6"

"$PY" "$ROOT/scripts/gpu_speed_summary.py" "$OUT" >"$OUT/summary.md" 2>"$OUT/summary.log"
echo "[gpu_speed] done in $((SECONDS - START))s; summary: $OUT/summary.md"
cat "$OUT/summary.md"
