#!/usr/bin/env bash
# The signature result in one sitting: several `experiment=qa1_signature` variants trained side
# by side on one machine (RMT, no memory, ARMT, a wider and deeper RMT), each then evaluated by
# `rmt-eval checkpoint=<run>` at 1x..16x its trained length. Written for a short GPU loan
# (everything in one command, time-boxed), and smoke-tested on CPU with tiny budgets:
#
#   scripts/signature_runs.sh OUT_DIR [TRAIN_MINUTES] [EXTRA_OVERRIDES...]
#   scripts/signature_runs.sh /tmp/sig 0.2 debug=fast           # CPU smoke test (about 2 min)
#   scripts/signature_runs.sh "$OUT" 6                            # the GPU run (README, Results)
#
# Each run's folder (configs, metrics.jsonl, summary.json, best/ model) and its <variant>-eval/
# folder (results and heatmap) is packed into OUT_DIR/<variant>.tar.gz; OUT_DIR/summary.md lists the numbers.
# Runs use `python3 -m rmt.cli.*`, so the package needs no install (PYTHONPATH=repo root).
set -u
out=${1:?usage: signature_runs.sh OUT_DIR [TRAIN_MINUTES] [OVERRIDES...]}
minutes=${2:-6}
shift $(( $# >= 2 ? 2 : $# ))
extra=("$@")
py=${PYTHON:-python3}
work=${SIGNATURE_WORK:-/tmp/rmt_signature}
mkdir -p "$out" "$work"
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false

# name | overrides (after experiment=qa1_signature)
variants=(
  "rmt|"
  "nomem|memory.num_tokens=0"
  "armt|memory=armt"
  "rmt_d128_l4|backbone.hidden_size=128 backbone.num_layers=4"
)
train_timeout=$(awk -v m="$minutes" 'BEGIN { printf "%d", m * 60 + 120 }')

train_and_eval() {
  local name=$1; shift
  local dir=$work/$name
  rm -rf "$dir" "$dir-eval"
  timeout "$train_timeout" "$py" -m rmt.cli.train experiment=qa1_signature "$@" \
    trainer.max_minutes="$minutes" trainer.progress_bar=false "${extra[@]}" \
    hydra.run.dir="$dir" > "$work/$name.train.log" 2>&1
  echo "[$(date +%T)] $name: train exit $?"
  timeout 150 "$py" -m rmt.cli.eval checkpoint="$dir" progress_bar=false \
    hydra.run.dir="$work/$name-eval" > "$work/$name.eval.log" 2>&1
  echo "[$(date +%T)] $name: eval exit $?"
}

echo "[$(date +%T)] start: ${#variants[@]} runs, $minutes min each"
pids=()
for v in "${variants[@]}"; do
  name=${v%%|*}; read -r -a args <<< "${v#*|}"
  train_and_eval "$name" "${args[@]}" &
  pids+=($!)
done
wait "${pids[@]}"

{
  echo "# qa1_signature runs ($(date -u +%F\ %T) UTC, ${minutes} min budget)"
  command -v nvidia-smi > /dev/null && nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
  "$py" -c "import torch, transformers; print('torch', torch.__version__, '| transformers', transformers.__version__)"
  for v in "${variants[@]}"; do
    name=${v%%|*}
    echo "## $name: ${v#*|}"
    [ -f "$work/$name/summary.json" ] && cat "$work/$name/summary.json"
    grep -h -A 3 "^model " "$work/$name.eval.log"
  done
} > "$out/summary.md" 2>&1
cat "$out/summary.md"
for v in "${variants[@]}"; do
  name=${v%%|*}
  cp "$work/$name.train.log" "$work/$name.eval.log" "$work/$name/" 2>/dev/null
  tar -C "$work" --exclude="$name/last" -czf "$out/$name.tar.gz" "$name" "$name-eval" 2>/dev/null
done
ls -la "$out"
