#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-3.0-or-later
"""Check that a code change left the bundled model's outputs bit for bit as they were.

    .venv/bin/python tools/compare_outputs.py --against HEAD~3
    .venv/bin/python tools/compare_outputs.py --against HEAD~1 --candidate HEAD

Checks out REV in a temporary git worktree, then runs the same fixed-seed generations (bundled
weights, the sample voice, three style pairs, with and without blinks, two frame rates) with the
core of REV and with the core of this working tree (or of `--candidate REV2`, so that uncommitted
changes stay out of the comparison), each in its own process on this machine, and compares every
array bit for bit. Both runs share the processor, so the check does not depend on its floating-point path.
Exit code 0: identical; 1: some array differs (each one is named).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]

# Runs inside the tree being measured (its own textalker_blender on PYTHONPATH).
GENERATE = r"""
import sys
import numpy as np
from textalker_blender.core.pipeline import Pipeline

pipe = Pipeline.load(device="cpu")
audio = "textalker_blender/assets/sample_speech.wav"
arrays = {}
for name, kwargs in (
    ("style0", dict(speaking_style=0, wrinkle_style=0)),
    ("mixed", dict(speaking_style=1, wrinkle_style=3, blink_rate=0)),
    ("fps25", dict(speaking_style=2, wrinkle_style=2, fps=25.0, steps=4)),
):
    kwargs.setdefault("fps", 30.0)
    result = pipe.generate(audio, seed=7, **kwargs)
    arrays[name + "_offsets"] = np.asarray(result.offsets)
    arrays[name + "_wrinkles"] = np.asarray(result.wrinkle_maps)
np.savez(sys.argv[1], **arrays)
"""


def generate_in(tree: Path, out: Path) -> None:
    env = dict(os.environ, PYTHONPATH=str(tree), OMP_NUM_THREADS="1")
    subprocess.run([sys.executable, "-c", GENERATE, str(out)], cwd=tree, env=env, check=True)


def compare(reference: Path, candidate: Path) -> list[str]:
    differences = []
    with np.load(reference) as old, np.load(candidate) as new:
        for name in sorted(set(old.files) | set(new.files)):
            if name not in old.files or name not in new.files:
                differences.append(f"{name}: only in one run")
            elif old[name].dtype != new[name].dtype or old[name].shape != new[name].shape:
                differences.append(f"{name}: {old[name].dtype}{old[name].shape} vs {new[name].dtype}{new[name].shape}")
            elif not np.array_equal(old[name], new[name]):
                largest = float(np.abs(old[name].astype(np.float64) - new[name].astype(np.float64)).max())
                differences.append(f"{name}: differs (largest difference {largest:.3g})")
    return differences


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--against", required=True, help="git revision whose outputs are the reference")
    parser.add_argument("--candidate", default=None, help="git revision to compare (default: this working tree)")
    args = parser.parse_args(argv)
    candidate_name = args.candidate or "the working tree"
    with tempfile.TemporaryDirectory(prefix="textalker_compare_") as scratch:
        scratch = Path(scratch)
        trees = {"reference": args.against, "candidate": args.candidate}
        worktrees = []
        try:
            for name, revision in trees.items():
                tree = REPO_ROOT
                if revision is not None:
                    tree = scratch / name
                    subprocess.run(["git", "-C", str(REPO_ROOT), "worktree", "add", "--detach", "--quiet", str(tree),
                                    revision], check=True)
                    worktrees.append(tree)
                generate_in(tree, scratch / f"{name}.npz")
            differences = compare(scratch / "reference.npz", scratch / "candidate.npz")
        finally:
            for tree in worktrees:
                subprocess.run(["git", "-C", str(REPO_ROOT), "worktree", "remove", "--force", str(tree)], check=False)
    if differences:
        print(f"outputs of {candidate_name} differ from {args.against}:")
        for line in differences:
            print("  " + line)
        return 1
    print(f"outputs of {candidate_name} identical to {args.against}: offsets and wrinkle maps of 3 fixed-seed "
          "generations, bit for bit")
    return 0


if __name__ == "__main__":
    sys.exit(main())
