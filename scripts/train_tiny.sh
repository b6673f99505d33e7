#!/usr/bin/env bash
# The all-CPU recipe for the tiny checkpoints, with what the model card has learnt (L1 only,
# colour augmentation, decoder adapters); the shipped ones' history: tadm/checkpoints/MODEL_CARD.md.
# Usage: scripts/train_tiny.sh DATA_URI VAL_URI OUT_DIR [STEP_FACTOR]
# Trains the base VAE once, then DFRM -> enhance -> joint for 16x and 32x side by side (one
# torch thread each). Every command resumes from OUT_DIR, so re-running continues a killed run.
set -euo pipefail
data=$1 val=$2 out=$3 k=${4:-1}
common=(--data "$data" --val "$val" --crop 96 --batch-size 8 --lr 1e-3 --val-every 200
        --checkpoint-every 200 --colour-aug --resume)
tadm train --stage vae --preset tiny --out "$out/vae" --steps $((800 * k)) --lambda-perc 0 \
  "${common[@]}"
chain() {
  local scale=$1 base=$out/x$1
  tadm train --stage dfrm --init "$out/vae/final" --scale "$scale" --out "$base/dfrm" \
    --steps $((400 * k)) --threads 1 "${common[@]}"
  tadm train --stage enhance --init "$base/dfrm/final" --out "$base/enhance" \
    --steps $((600 * k)) --threads 1 --lambda-perc 0 --vae-lora-rank 8 "${common[@]}"
  tadm train --stage joint --init "$base/enhance/final" --out "$base/joint" \
    --steps $((600 * k)) --threads 1 --lambda-perc 0 "${common[@]}"
}
chain 16 > "$out/x16.log" 2>&1 &
chain 32 > "$out/x32.log" 2>&1 &
wait
