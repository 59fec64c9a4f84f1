#!/usr/bin/env bash
# Makes the bundled sample voice textalker_blender/assets/sample_speech.wav:
# an English sentence full of bilabials (p/b/m: lips close) and open vowels (a/o: jaw opens),
# synthesised offline with Debian's flite (voice "slt"), then mono 16 kHz 16-bit PCM with sox,
# peak-normalised to -1 dBFS and with 0.2 s of silence on each side.
# Needs: apt-get install -y flite sox
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
out="$here/textalker_blender/assets/sample_speech.wav"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
text="Bob and Pam made a map of the big bay. Maybe the boat will pop up by the palm, \
but my mom bought a lamp at the market instead."
flite -voice slt -t "$text" -o "$tmp/raw.wav"
sox "$tmp/raw.wav" -r 16000 -c 1 -b 16 "$out" norm -1 pad 0.2 0.2
soxi "$out"
