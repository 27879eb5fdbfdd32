#!/usr/bin/env bash
# Turns a training run into the shipped default model, reproducibly:
#   export -> calibrate thresholds on the validation split -> parity fixture ->
#   evaluation report, learning curve and model selection over epochs.
# Usage: scripts/release-model.sh [RUN_DIR] [EPOCH]   (default: training/runs/compact, last)
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=${1:-training/runs/compact}
CKPT=${2:+$RUN/epoch_$(printf %03d "$2").pt}
CKPT=${CKPT:-$RUN/last.pt}
PY=${HEMOCOUNT_PYTHON:-/usr/bin/python3}
VAL=training/splits/val.json
TMP=$(mktemp -d)
FIX=(samples/BloodImage_00004.jpg samples/BloodImage_00011.jpg samples/0aa766fb-87f4-5dba-86e7-299250bc2e25.jpg)
export PYTHONPATH=training
$PY -m hemocount_train export "$CKPT" --out "$TMP/raw.onnx" --name hemocount-compact
node bin/hemocount.js calibrate --data "$VAL" --model "$TMP/raw.onnx" --out models/hemocount-default.onnx --quiet
$PY -m hemocount_train fixture "$CKPT" --onnx models/hemocount-default.onnx "${FIX[@]}"
cp "$RUN/train_log.jsonl" models/train_log.jsonl
node bin/hemocount.js report --data "$VAL" --out docs/validation/report.html --log models/train_log.jsonl --quiet
node bin/hemocount.js evaluate --data "$VAL" --json docs/validation/evaluate.json --quiet > docs/validation/evaluate.txt
ls -la models/
