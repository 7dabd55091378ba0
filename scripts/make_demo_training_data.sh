#!/bin/bash
# Builds the demo model's training and held-out audio (models/README.md) from
# what Debian ships: speech synthesized by espeak-ng and flite from the text of
# the GPL-3, and the three GPL-2+ tracks of asc-music. Nothing here is
# committed; the output is about 2,700 s of WAV files (~150 MB).
#
#   apt-get install espeak-ng flite sox libsox-fmt-mp3 asc-music
#   scripts/make_demo_training_data.sh OUT_DIR
#
# OUT_DIR/train        every training file (speech and music)
# OUT_DIR/heldout/speech, OUT_DIR/heldout/music   never trained on
# Held out: every 20th sentence (its text is in no training file) and two 10 s
# pieces of each track (the pieces at 40% and 80% of its length).
set -euo pipefail

out=${1:?usage: $0 OUT_DIR}
gpl3=/usr/share/common-licenses/GPL-3
music=/usr/share/games/asc/music
for tool in espeak-ng flite sox; do
  command -v "$tool" > /dev/null || { echo "$0: $tool is missing (apt-get install espeak-ng flite sox libsox-fmt-mp3)" >&2; exit 1; }
done
[ -d "$music" ] || { echo "$0: $music is missing (apt-get install asc-music)" >&2; exit 1; }
mkdir -p "$out/train" "$out/heldout/speech" "$out/heldout/music"

# 120 sentences of the GPL-3's text, 40 to 200 characters each.
tr '\n' ' ' < "$gpl3" | sed 's/[.;:] /\n/g' | tr -s ' ' | awk 'length($0) >= 40 && length($0) <= 200' | head -n 120 > "$out/sentences.txt"

espeak_voices=(en-us en-gb en-gb-scotland en-gb-x-rp en-us+f3 en-us+m3 en-gb+f4)
flite_voices=(slt rms awb kal16)
index=0
while IFS= read -r sentence; do
  name=$(printf 'utt_%04d' "$index")
  if (( index % 20 == 19 )); then dir="$out/heldout/speech"; else dir="$out/train"; fi
  voice=${espeak_voices[index % ${#espeak_voices[@]}]}
  speed=$(( 140 + (index * 37) % 60 ))
  pitch=$(( 30 + (index * 53) % 40 ))
  espeak-ng -v "$voice" -s "$speed" -p "$pitch" -w "$dir/${name}_espeak.wav" "$sentence"
  flite -voice "${flite_voices[index % ${#flite_voices[@]}]}" -t "$sentence" -o "$dir/${name}_flite.wav"
  index=$(( index + 1 ))
done < "$out/sentences.txt"

# Each track as 10 s pieces at 24 kHz mono: two held out, the rest for training.
for track in "$music"/*.mp3; do
  base=$(basename "$track" .mp3)
  sox "$track" -r 24000 -c 1 -b 16 "$out/$base.wav"
  length=$(soxi -D "$out/$base.wav")
  pieces=$(awk -v l="$length" 'BEGIN { print int(l / 10) }')
  held_a=$(( pieces * 4 / 10 ))
  held_b=$(( pieces * 8 / 10 ))
  for (( piece = 0; piece < pieces; ++piece )); do
    if (( piece == held_a || piece == held_b )); then dir="$out/heldout/music"; else dir="$out/train"; fi
    sox "$out/$base.wav" "$dir/${base}_$(printf '%03d' "$piece").wav" trim $(( piece * 10 )) 10
  done
  rm "$out/$base.wav"
done
echo "$0: $(ls "$out/train" | wc -l) training files, $(ls "$out/heldout/speech" | wc -l) held-out speech," \
  "$(ls "$out/heldout/music" | wc -l) held-out music files in $out"
