#!/bin/bash
# Trains the demo model (models/README.md) from scratch in its six stages,
# each continuing the last one's checkpoint and optimizer (--resume), then
# writes the float16 file that is shipped as models/encodec_demo_24khz.th.
# About 2 hours of one core of this project's machines (0.25-0.4 s a step).
#
#   scripts/make_demo_training_data.sh /tmp/demo_data
#   scripts/train_demo_model.sh /tmp/demo_data /tmp/demo_run [BUILD_DIR]
#
# Stage 1 (steps 0-4,000): the autoencoder alone for 1,500 steps, then k-means
# of the 16 codebooks and quantized training; time L1 weighted 2, mel 1.
# Stage 2 (to 6,250): loudness augmentation (normalize_segments).
# Stage 3 (to 8,250): time 1, mel 2.  Stage 4 (to 10,000): time 1, mel 3, and
# every speech file twice in the data. Stage 5 (to 11,500): Adam lr 3e-4.
# Stage 6 (to the end): lr 1e-4.
set -euo pipefail

data=${1:?usage: $0 DATA_DIR RUN_DIR [BUILD_DIR]}
run=${2:?usage: $0 DATA_DIR RUN_DIR [BUILD_DIR]}
build=${3:-build}
configs=$(cd "$(dirname "$0")/.." && pwd)/configs/demo_24khz
train=$build/train/encodec-train
[ -x "$train" ] || { echo "$0: $train is missing (build the project first)" >&2; exit 1; }
[ -d "$data/train" ] && [ -d "$data/heldout" ] || { echo "$0: $data has no train/ and heldout/ (run scripts/make_demo_training_data.sh)" >&2; exit 1; }

# Every speech file twice (symbolic links): 76% of the segments are speech
# instead of 62%, since the speech lagged behind the music.
mkdir -p "$run/speech2x"
for file in "$data"/train/*; do ln -sf "$(realpath "$file")" "$run/speech2x/$(basename "$file")"; done
for file in "$data"/train/utt_*; do ln -sf "$(realpath "$file")" "$run/speech2x/copy2_$(basename "$file")"; done

common=(-o "$run/demo.th" --threads 1 --heldout "$data/heldout" --eval-every 500 --log-every 100)
"$train" -c "$configs/stage1.json" -d "$data/train" "${common[@]}"
"$train" -c "$configs/stage2.json" -d "$data/train" --resume "${common[@]}"
"$train" -c "$configs/stage3.json" -d "$data/train" --resume "${common[@]}"
"$train" -c "$configs/stage4.json" -d "$run/speech2x" --resume "${common[@]}"
"$train" -c "$configs/stage5.json" -d "$run/speech2x" --resume "${common[@]}"
"$train" -c "$configs/stage6.json" -d "$run/speech2x" --resume "${common[@]}"
"$train" -o "$run/demo.th" --export-half "$run/encodec_demo_24khz.th"
echo "$0: wrote $run/encodec_demo_24khz.th"
