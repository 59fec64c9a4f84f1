"""How well the generation-time emphasis finder (core/brows.py) lands on the brow emphases of a dataset.

For each utterance with brow emphases in its ground truth (runs of the brow track above the
event level, as `brow_statistics` counts them), the finder's nuclei are ranked by how long they
are held and the top k (k = the utterance's number of emphases) are compared with the true
emphases: an emphasis is hit when a chosen nucleus starts inside it. Two references on the same
utterances: k nuclei drawn at random (what timing without any cue would score) and, where the
dataset has phoneme labels, its k longest labelled vowels (what a perfect vowel finder would
score; the synthetic dataset places emphases on the longest vowels of content words).

    .venv/bin/python tools/brow_timing.py --data data/synthetic_textalk4d [--split train] [--every 6]

Prints one JSON object (docs/MODEL.md quotes it).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from textalker_blender.core.brows import EVENT_LEVEL, FURROW_UNITS, PEAK_LEVEL, RAISE_UNITS, _runs, emphasis_nuclei  # noqa: E402


def true_emphases(weights: np.ndarray, unit_names, fps: float) -> list[tuple[float, float]]:
    """(start, end) in s of the brow emphases of face-unit weights (T, U)."""
    raise_ = weights[:, [unit_names.index(n) for n in RAISE_UNITS]].mean(axis=1)
    furrow = weights[:, [unit_names.index(n) for n in FURROW_UNITS]].mean(axis=1)
    track = np.maximum(raise_, furrow)
    return [(a / fps, b / fps) for a, b in _runs(track > EVENT_LEVEL) if track[a:b].max() >= PEAK_LEVEL]


def measure(data: Path, split: str, every: int, seed: int = 0) -> dict:
    from tools.synthetic_textalk4d.reader import SyntheticTextalk4D
    from tools.synthetic_textalk4d.visemes import VOWELS

    dataset = SyntheticTextalk4D(data, split=split, maps=False)
    names = list(dataset.template.unit_names)
    rng = np.random.default_rng(seed)
    counts = {"finder": 0, "random": 0, "labelled_vowels": 0}
    emphases = utterances = 0
    started = time.monotonic()
    for index in range(0, len(dataset), max(1, every)):
        sample = dataset.load(index)
        events = true_emphases(sample.weights, names, sample.fps)
        if not events:
            continue
        utterances += 1
        emphases += len(events)
        nuclei = emphasis_nuclei(sample.audio, sample.sample_rate)
        k = len(events)
        chosen = {
            "finder": [n.start_s for n in sorted(nuclei, key=lambda n: (-n.prominence, n.start_s))[:k]],
            "random": [nuclei[i].start_s for i in rng.permutation(len(nuclei))[:k]] if nuclei else [],
            "labelled_vowels": [p.start for p in sorted((p for p in sample.phonemes if p.label in VOWELS),
                                                        key=lambda p: -(p.end - p.start))[:k]],
        }
        for key, starts in chosen.items():
            counts[key] += sum(any(lo <= s <= hi for s in starts) for lo, hi in events)
    return {
        "split": split, "utterances": utterances, "emphases": emphases, "every": every,
        **{f"hit_{key}": round(value / max(emphases, 1), 3) for key, value in counts.items()},
        "seconds": round(time.monotonic() - started, 1),
    }


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="synthetic TexTalk4D folder")
    parser.add_argument("--split", default="train")
    parser.add_argument("--every", type=int, default=6, help="measure every n-th utterance")
    args = parser.parse_args(argv)
    result = measure(args.data, args.split, args.every)
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
