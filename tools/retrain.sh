#!/usr/bin/env bash
# Retrain the bundled model from a fresh clone, in one command:
#
#   bash tools/retrain.sh [RUNS_DIR]        (default RUNS_DIR: runs/bundled, git-ignored)
#
# Sets up .venv, builds the synthetic TexTalk4D if it is missing, trains both VQ autoencoders
# side by side (one thread each), then (when the config's "refine" section asks for steps) refines
# the motion VQ for vertex accuracy (stage 1b: the decoder alone, or with "train_encoder" the whole
# VQ, blinks oversampled), then the latent diffusion model on the final motion VQ, then writes the
# add-on's weights file (with each wrinkle style's bias map and the closure detector) and its manifest entry. Every stage resumes from
# its checkpoint, so the same command continues an interrupted run (a finished stage is skipped in
# seconds).
#
# Environment knobs:
#   CONFIG=tools/configs/bundled.json   training config (tools/configs/paper.json: paper size)
#   MAX_MINUTES=150                     stop each stage after this long (checkpointed); re-run
#                                       the command to continue
#   EXPORT_TO=textalker_blender/assets/textalker_bundled.safetensors
#                                       (its SHA-256 goes into the manifest.json beside it)
#   DATA=data/synthetic_textalk4d       dataset folder (built here when missing)
#   MOTION_VQ_FROM=FILE.safetensors     keep that weights file's motion VQ (tools/unpack_vq.py)
#                                       instead of training and refining one: for data changes
#                                       that leave the motion maps as they were
#   INIT_FROM=FILE.safetensors          warm-start stage 2's denoiser and audio front end from it
#   CLOSURE_STEPS=2000                  training steps of the closure detector written into the
#                                       export (tools/train_closure.py)
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS="${1:-runs/bundled}"
CONFIG="${CONFIG:-tools/configs/bundled.json}"
MAX_MINUTES="${MAX_MINUTES:-150}"
CLOSURE_STEPS="${CLOSURE_STEPS:-2000}"
EXPORT_TO="${EXPORT_TO:-textalker_blender/assets/textalker_bundled.safetensors}"
DATA="${DATA:-data/synthetic_textalk4d}"
PY=.venv/bin/python

bash tools/setup_env.sh
if [ ! -f "$DATA/meta.json" ]; then
    echo "== building the synthetic TexTalk4D dataset into $DATA"
    "$PY" tools/make_dataset.py --out "$DATA" --no-docs  # docs/DATASET.md is already in git
fi

if [ -n "${MOTION_VQ_FROM:-}" ]; then
    if [ ! -f "$RUNS/motion_unpacked/checkpoint/vq.safetensors" ]; then
        echo "== stage 1: motion VQ unpacked from $MOTION_VQ_FROM"
        "$PY" tools/unpack_vq.py --weights "$MOTION_VQ_FROM" --which motion --run "$RUNS/motion_unpacked"
    fi
    echo "== stage 1: wrinkle VQ autoencoder"
    OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}" "$PY" tools/train_vq.py --config "$CONFIG" --data "$DATA" \
        --run "$RUNS/wrinkle" --which wrinkle --max-minutes "$MAX_MINUTES" --threads "${OMP_NUM_THREADS:-2}" --no-progress
else
    echo "== stage 1: motion and wrinkle VQ autoencoders (side by side, one thread each)"
    OMP_NUM_THREADS=1 "$PY" tools/train_vq.py --config "$CONFIG" --data "$DATA" --run "$RUNS/motion" \
        --which motion --max-minutes "$MAX_MINUTES" --threads 1 --no-progress &
    motion_pid=$!
    OMP_NUM_THREADS=1 "$PY" tools/train_vq.py --config "$CONFIG" --data "$DATA" --run "$RUNS/wrinkle" \
        --which wrinkle --max-minutes "$MAX_MINUTES" --threads 1 --no-progress &
    wrinkle_pid=$!
    trap 'kill -TERM $motion_pid $wrinkle_pid 2>/dev/null || true' INT TERM
    wait $motion_pid
    wait $wrinkle_pid
    trap - INT TERM
fi

stage_done() {  # RUN SECTION: has the run reached the config's step budget for that stage?
    "$PY" - "$1" "$2" "$CONFIG" <<'EOF'
import json, sys
from pathlib import Path
run, section, config = Path(sys.argv[1]), sys.argv[2], json.loads(Path(sys.argv[3]).read_text())
progress = run / "checkpoint" / "progress.json"
step = json.loads(progress.read_text())["step"] if progress.is_file() else 0
sys.exit(0 if step >= int(config[section]["steps"]) else 1)
EOF
}
motion_run="$RUNS/motion"
[ -n "${MOTION_VQ_FROM:-}" ] && motion_run="$RUNS/motion_unpacked"
if { [ -z "${MOTION_VQ_FROM:-}" ] && ! stage_done "$motion_run" vq; } || ! stage_done "$RUNS/wrinkle" vq; then
    echo "stage 1 stopped before its step budget (time limit); run the same command again to continue"
    exit 0
fi

refine_steps=$("$PY" -c 'import json, sys; print(int(json.load(open(sys.argv[1])).get("refine", {}).get("steps", 0)))' "$CONFIG")
refine_encoder=$("$PY" -c 'import json, sys; print(int(bool(json.load(open(sys.argv[1])).get("refine", {}).get("train_encoder", False))))' "$CONFIG")
decoder_args=()
motion_vq="$motion_run"
if [ "$refine_steps" -gt 0 ] && [ -z "${MOTION_VQ_FROM:-}" ]; then  # a kept motion VQ is already final
    echo "== stage 1b: motion VQ refined on vertex offsets"
    OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}" "$PY" tools/refine_decoder.py --config "$CONFIG" --data "$DATA" \
        --run "$RUNS/motion_refine" --motion-vq "$RUNS/motion" --max-minutes "$MAX_MINUTES" --no-progress
    if ! stage_done "$RUNS/motion_refine" refine; then
        echo "stage 1b stopped before its step budget (time limit); run the same command again to continue"
        exit 0
    fi
    if [ "$refine_encoder" = 1 ]; then
        motion_vq="$RUNS/motion_refine"  # new codes: stage 2 learns them
    else
        decoder_args=(--motion-decoder "$RUNS/motion_refine")  # same codes: decoder swapped in at export
    fi
fi

echo "== stage 2: audio front end + latent diffusion model"
OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}" "$PY" tools/train_ldm.py --config "$CONFIG" --data "$DATA" \
    --run "$RUNS/ldm" --motion-vq "$motion_vq" --wrinkle-vq "$RUNS/wrinkle" \
    ${INIT_FROM:+--init-from "$INIT_FROM"} --max-minutes "$MAX_MINUTES" --no-progress

if ! stage_done "$RUNS/ldm" ldm; then
    echo "stage 2 stopped before its step budget (time limit); run the same command again to continue"
    exit 0
fi

echo "== export: $EXPORT_TO (+ assets/manifest.json)"
# (+ each wrinkle style's bias map, fitted on the training frames: a few minutes)
"$PY" tools/export_bundle.py --run "$RUNS/ldm" --out "$EXPORT_TO" "${decoder_args[@]}" --fit-wrinkle-bias "$DATA"
echo "== closure detector: where the lip seal presses (core/closure.py; about 13 min)"
"$PY" tools/train_closure.py --weights "$EXPORT_TO" --data "$DATA" --steps "$CLOSURE_STEPS" --json "$RUNS/closure.json"
echo "done: evaluate with  $PY tools/evaluate.py --data $DATA --weights $EXPORT_TO"
