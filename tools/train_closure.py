#!/usr/bin/env python3
"""Train the closure detector (core/closure.py) and write it into a weights file.

    .venv/bin/python tools/train_closure.py --weights textalker_blender/assets/textalker_bundled.safetensors \\
        --data data/synthetic_textalk4d [--out OTHER.safetensors] [--steps 2000] [--seed 0] \\
        [--threads 2] [--json runs/closure/record.json]

The detector says, per frame, whether the lips are shut (a /p b m/, or silence); the lip seal
presses near-closures shut only there (core/lip_seal.py). It is trained on the synthetic
dataset's train split (wideband and a telephone copy of every utterance, the stage-2 log-mel
augmentations), scored on test-A and test-A's telephone copies, and written into the weights
file beside the model, whose other tensors stay as they are (run it after
tools/export_bundle.py, like `--fit-wrinkle-bias`). About 13 minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from textalker_blender.core.closure import ClosureDetector, ClosureDetectorConfig  # noqa: E402
from textalker_blender.core.template import load_template  # noqa: E402
from tools.training.closure_fit import (  # noqa: E402
    closure_examples,
    detector_scores,
    train_detector,
    write_detector,
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", type=Path, required=True, help="weights file to add the detector to")
    parser.add_argument("--data", type=Path, default=REPO / "data" / "synthetic_textalk4d")
    parser.add_argument("--out", type=Path, default=None, help="write here instead of in place")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--limit", type=int, default=None, help="first N utterances per split (quick runs, tests)")
    parser.add_argument("--no-manifest", action="store_true", help="do not update the weights manifest")
    parser.add_argument("--json", type=Path, default=None, help="write the training record and scores here")
    args = parser.parse_args(argv)
    if args.steps < 1:
        parser.error("--steps must be at least 1")
    import torch

    torch.set_num_threads(max(1, args.threads))
    started = time.monotonic()
    template = load_template()
    probe = ClosureDetector(ClosureDetectorConfig())
    train = closure_examples(args.data, "train", probe, template, telephone=True, limit=args.limit)
    test = closure_examples(args.data, "test-A", probe, template, telephone=True, limit=args.limit)
    print(f"examples: {len(train)} train, {len(test)} test-A ({time.monotonic() - started:.0f} s)")
    config_path = REPO / "tools" / "configs" / "bundled.json"
    augment = json.loads(config_path.read_text())["ldm"].get("augment", {})
    detector, record = train_detector(train, probe.config, steps=args.steps, batch=args.batch, seed=args.seed,
                                      augment=augment)
    scores = detector_scores(detector, test)
    record["test_A"] = scores
    record["seconds"] = round(time.monotonic() - started, 1)
    for band, values in scores.items():
        print(f"test-A {band}: AUC {values['auc']:.3f}, precision {values['precision']:.3f}, "
              f"recall {values['recall']:.3f} at p >= 0.5 ({values['frames']} frames, "
              f"{values['closed_share']:.1%} closed)")
    digest = write_detector(args.weights, detector, record, args.out, update_manifest=not args.no_manifest)
    print(f"wrote the closure detector into {args.out or args.weights} (SHA-256 {digest[:16]}...) "
          f"in {record['seconds']:.0f} s")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(record, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
