#!/usr/bin/env bash
# The paper's model selection: export the checkpoints of several epochs and compare their
# F1 per threshold per class on the validation split (Tables 1-3), naming the best.
# Usage: scripts/select-epochs.sh [RUN_DIR] [EPOCHS...]   (default: training/runs/compact 10 15 20 25 30)
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=${1:-training/runs/compact}
shift || true
EPOCHS=("${@:-10 15 20 25 30}")
PY=${HEMOCOUNT_PYTHON:-/usr/bin/python3}
OUT=$(mktemp -d)
models=()
for e in ${EPOCHS[@]}; do
  f=$(printf '%s/epoch_%03d.pt' "$RUN" "$e")
  [ -f "$f" ] || { echo "no checkpoint $f" >&2; exit 1; }
  PYTHONPATH=training $PY -m hemocount_train export "$f" --out "$OUT/epoch$e.onnx" >/dev/null
  models+=("$OUT/epoch$e.onnx")
done
mkdir -p docs/validation
node bin/hemocount.js select --data training/splits/val.json --quiet "${models[@]}" | tee docs/validation/select.txt
