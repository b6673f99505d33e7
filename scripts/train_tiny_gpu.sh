#!/usr/bin/env bash
# Continue training the shipped tiny checkpoints on one GPU: per scale a `joint` stage from the
# checkpoint (fresh decoder adapters of rank 8, merged on shipping), x16 and x32 side by side,
# one process each, at the batch x crop that trained them (MODEL_CARD.md, the third H100 session).
# Usage: scripts/train_tiny_gpu.sh DATA VAL OUT [MINUTES] [INIT16] [INIT32]
# Then evaluate (scripts/evaluate_checkpoint.py OUT/ship-x16 VAL) before shipping OUT/ship-x*.
set -euo pipefail
data=$1 val=$2 out=$3 m=${4:-3} init16=${5:-tiny-x16} init32=${6:-tiny-x32}
py=${PYTHON:-python}
mkdir -p "$out"
joint() {  # scale, init, batch, crop
  "$py" scripts/train_tiny_single.py "$data" "$val" "$out/x$1" --stages joint --init "$2" \
    --scale "$1" --minutes "$m" --batch-size "$3" --crop "$4" --lr 2e-3 --vae-lora-rank 8 \
    --lambda-perc 0 --colour-aug --val-every 100000
  "$py" scripts/ship_checkpoint.py "$out/x$1/joint/final" "$out/ship-x$1"
}
joint 16 "$init16" 18 256 > "$out/x16.log" 2>&1 & x16=$!
joint 32 "$init32" 12 320 > "$out/x32.log" 2>&1 & x32=$!
wait $x16 && wait $x32
