#!/usr/bin/env python3
"""Unpack one VQ autoencoder of a TexTalker weights file into a stage-1 run folder.

Stage 2 (tools/train_ldm.py --motion-vq / --wrinkle-vq) and the export read their VQs from run
folders. The run folders of a shipped bundle may be gone (they live outside the repository); this
rebuilds one from the bundle itself, so a retraining can keep a VQ the bundle already has (for
example the refined motion VQ when only the wrinkle data changed) instead of training it again:

    .venv/bin/python tools/unpack_vq.py --weights textalker_blender/assets/textalker_bundled.safetensors \\
        --which motion --run runs/bundled/motion_from_bundle

The folder holds what a finished tools/train_vq.py run holds for stage 2: `config.json` (the
bundle's model config, stage "vq", the kind, where it came from), `checkpoint/vq.safetensors`
(canonical bytes: same bundle, same file, same latent-cache key) and `checkpoint/progress.json`
(the step is the bundle's recorded one, or 0 when it has none). It cannot resume training: it has
no optimiser state.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tools.training.artefacts import write_vq_weights
from tools.training.common import RunFolder, write_json

from textalker_blender.core.model import TexTalkerModel
from textalker_blender.core.weights import load_weights, sha256_file


def unpack_vq(weights_path: str | Path, which: str, run_path: str | Path) -> Path:
    """Writes the `which` ("motion" or "wrinkle") VQ of a weights file as a VQ run folder."""
    weights_path = Path(weights_path)
    run = RunFolder(run_path)
    if run.has_checkpoint():
        raise FileExistsError(f"{run.path} already holds a checkpoint; choose an empty run folder")
    weights = load_weights(weights_path, verify=False)
    model = TexTalkerModel.from_weights(weights)
    vq = model.motion_vq if which == "motion" else model.wrinkle_vq
    if vq is None:
        raise ValueError(f"{weights_path.name} has no {which} VQ (a joint-codebook bundle)")
    training = json.loads(weights.metadata.get("training", "{}"))
    step = int(training.get("motion_decoder_refine_step" if which == "motion" else "wrinkle_vq_step", 0) or 0)
    run.path.mkdir(parents=True, exist_ok=True)
    write_json(run.path / "config.json", {
        "model": model.config.to_dict(), "vq": {}, "ldm": {}, "refine": {},
        "stage": "vq", "kind": which,
        "unpacked_from": str(weights_path.resolve()), "unpacked_from_sha256": sha256_file(weights_path),
    })
    run.checkpoint.mkdir(parents=True, exist_ok=True)
    write_vq_weights(run.checkpoint, vq, {"kind": which, "unpacked_from_sha256": sha256_file(weights_path)})
    write_json(run.checkpoint / "progress.json", {"step": step, "unpacked": True})
    return run.path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", type=Path, required=True, help="TexTalker weights file (.safetensors)")
    parser.add_argument("--which", choices=("motion", "wrinkle"), required=True)
    parser.add_argument("--run", type=Path, required=True, help="new run folder")
    args = parser.parse_args(argv)
    try:
        path = unpack_vq(args.weights, args.which, args.run)
    except (FileExistsError, ValueError, OSError) as error:
        print(f"unpack_vq: {error}", file=sys.stderr)
        return 1
    print(f"{args.which} VQ of {args.weights} -> {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
