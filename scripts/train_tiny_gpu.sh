#!/usr/bin/env bash
# The GPU recipe of the shipped tiny checkpoints (MODEL_CARD.md, the second H100 session), made to
# continue from them: the VAE trained on (L1, colour augmentation), then per scale dfrm ->
# enhance -> joint from that scale's checkpoint with the new VAE put in, under decoder adapters
# of rank 8; x16 and x32 side by side, one process each. About 3 x MINUTES + MINUTES of training.
# Usage: scripts/train_tiny_gpu.sh DATA VAL OUT [MINUTES_PER_STAGE] [INIT16] [INIT32]
# Then evaluate (scripts/evaluate_checkpoint.py OUT/ship-x16 VAL) before shipping OUT/ship-x*.
set -euo pipefail
data=$1 val=$2 out=$3 m=${4:-1.5} init16=${5:-tiny-x16} init32=${6:-tiny-x32}
py=${PYTHON:-python}
mkdir -p "$out"
common=(--lambda-perc 0 --colour-aug --batch-size 32 --crop 192 --val-every 100000)
"$py" scripts/train_tiny_single.py "$data" "$val" "$out/v" --stages vae --init "$init16" \
  --minutes "$m" "${common[@]}"
chain() {
  "$py" scripts/train_tiny_single.py "$data" "$val" "$out/x$1" --stages dfrm,enhance,joint \
    --init "$2" --vae "$out/v/vae/final" --scale "$1" --minutes "$m" --vae-lora-rank 8 \
    "${common[@]}"
  "$py" scripts/ship_checkpoint.py "$out/x$1/joint/final" "$out/ship-x$1"
}
chain 16 "$init16" > "$out/x16.log" 2>&1 & x16=$!
chain 32 "$init32" > "$out/x32.log" 2>&1 & x32=$!
wait $x16 && wait $x32
