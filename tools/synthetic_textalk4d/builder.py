"""Build the synthetic TexTalk4D dataset: subjects, speech, phoneme timings, face-unit weights.

Layout of the output folder (all JSON written with sorted keys, no timestamps, so the same seed
gives the same bytes):
    meta.json                   format, seed, fps, unit names, subjects, splits
    subjects/S00.json           identity, voice, speaking style, wrinkle style, skin tone
    utterances.json             per utterance: id, subject, split, text, phonemes, frames, files
    audio/S00/S00_0000.flac     16 kHz mono, 16-bit FLAC
    weights/S00/S00_0000.npy    float16 (T, 52) face-unit weights at 30 fps, meta unit order
    stats.json                  statistics (no timings)
Motion and wrinkle maps are rendered on demand by `reader.SyntheticTextalk4D`.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import time
from pathlib import Path

import numpy as np

from .motion import FPS, face_unit_weights
from .speech import SAMPLE_RATE, ensure_speech_tools, synthesize, write_flac
from .styles import Subject, make_subject
from .text import make_sentences
from .visemes import ARKIT_UNITS

FORMAT_VERSION = 1
DATASET_NAME = "synthetic-textalk4d"
SPLITS = ("train", "test-A", "test-B")
TEST_A_EVERY = 10          # every 10th utterance of a seen subject uses a held-out sentence
TEST_POOL_SIZE = 300       # held-out sentences (test-A and test-B speak only these)


@dataclasses.dataclass
class BuildConfig:
    out: Path
    subjects: int = 24
    minutes: float = 60.0
    seed: int = 0
    test_b_subjects: int | None = None   # default: one in six (4 of 24)
    jobs: int = 1

    def n_test_b(self) -> int:
        if self.test_b_subjects is not None:
            return int(self.test_b_subjects)
        if self.subjects <= 1:
            return 0
        return max(1, int(round(self.subjects / 6)))


def dump_json(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(data, indent=1, sort_keys=True, ensure_ascii=True) + "\n"
    path.write_text(text, encoding="utf-8")


def make_subjects(config: BuildConfig) -> list[Subject]:
    n_test_b = config.n_test_b()
    subjects = []
    for index in range(config.subjects):
        split = "test-B" if index >= config.subjects - n_test_b else "train"
        subjects.append(make_subject(config.seed, index, split))
    return subjects


def _sentence_pools(config: BuildConfig) -> tuple[list[str], list[str]]:
    # Enough distinct sentences that subjects rarely repeat one (about 2.5 s per sentence).
    expected = int(config.minutes * 60 / 2.5) + 1
    total = TEST_POOL_SIZE + max(200, expected)
    sentences = make_sentences(total, config.seed)
    return sentences[TEST_POOL_SIZE:], sentences[:TEST_POOL_SIZE]


def _build_subject(args) -> list[dict]:
    out, subject_dict, seconds, seed, train_pool, test_pool, closure_model = args
    subject = Subject.from_dict(subject_dict)
    rng = np.random.default_rng([seed, 0x5E47, subject.index])
    out = Path(out)
    entries = []
    total = 0.0
    number = 0
    while total < seconds:
        if subject.split == "test-B":
            split, pool = "test-B", test_pool
        elif number % TEST_A_EVERY == TEST_A_EVERY - 1:
            split, pool = "test-A", test_pool
        else:
            split, pool = "train", train_pool
        text = pool[int(rng.integers(len(pool)))]
        audio, phonemes = synthesize(text, subject.voice)
        duration = len(audio) / SAMPLE_RATE
        motion_rng = np.random.default_rng([seed, 0xB11C, subject.index, number])
        weights = face_unit_weights(phonemes, text, duration, subject.speaking, motion_rng,
                                    lip_closure_model=closure_model)
        utterance_id = f"{subject.name}_{number:04d}"
        audio_rel = f"audio/{subject.name}/{utterance_id}.flac"
        weights_rel = f"weights/{subject.name}/{utterance_id}.npy"
        (out / audio_rel).parent.mkdir(parents=True, exist_ok=True)
        (out / weights_rel).parent.mkdir(parents=True, exist_ok=True)
        write_flac(out / audio_rel, audio)
        np.save(out / weights_rel, weights.astype(np.float16))
        entries.append({
            "id": utterance_id, "subject": subject.name, "subject_index": subject.index,
            "split": split, "text": text, "sentence_id": _sentence_id(text, train_pool, test_pool),
            "duration_s": round(duration, 6), "n_frames": int(weights.shape[0]),
            "n_samples": int(len(audio)), "audio": audio_rel, "weights": weights_rel,
            "phonemes": [p.to_list() for p in phonemes],
        })
        total += duration
        number += 1
    return entries


def _sentence_id(text: str, train_pool: list[str], test_pool: list[str]) -> str:
    if text in test_pool:
        return f"test_{test_pool.index(text):04d}"
    return f"train_{train_pool.index(text):05d}"


def build(config: BuildConfig, log=print) -> dict:
    """Write the dataset; returns a report with timings (timings are not written in the folder)."""
    started = time.perf_counter()
    ensure_speech_tools()
    from textalker_blender.core.template import load_template
    from .geometry import lip_closure_model

    template = load_template()
    missing = sorted(set(ARKIT_UNITS) - set(template.unit_names))
    if missing:
        raise ValueError(f"template lacks face units {missing}")
    closure_model = lip_closure_model(template)
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    subjects = make_subjects(config)
    for subject in subjects:
        dump_json(out / "subjects" / f"{subject.name}.json", subject.to_dict())
    train_pool, test_pool = _sentence_pools(config)
    seconds = config.minutes * 60.0 / max(config.subjects, 1)
    tasks = [(str(out), s.to_dict(), seconds, config.seed, train_pool, test_pool, closure_model)
             for s in subjects]
    entries: list[dict] = []
    log(f"synthesising {config.subjects} subjects x {seconds:.0f} s of speech with {config.jobs} job(s)")
    if config.jobs > 1:
        with concurrent.futures.ProcessPoolExecutor(config.jobs) as pool:
            for subject, result in zip(subjects, pool.map(_build_subject, tasks)):
                entries += result
                log(f"  {subject.name}: {len(result)} utterances")
    else:
        for subject, task in zip(subjects, tasks):
            result = _build_subject(task)
            entries += result
            log(f"  {subject.name}: {len(result)} utterances, {sum(e['duration_s'] for e in result):.0f} s")
    synth_seconds = time.perf_counter() - started
    entries.sort(key=lambda e: e["id"])
    dump_json(out / "utterances.json", entries)
    splits = {split: [e["id"] for e in entries if e["split"] == split] for split in SPLITS}
    meta = {
        "name": DATASET_NAME, "format_version": FORMAT_VERSION, "seed": config.seed,
        "fps": FPS, "sample_rate": SAMPLE_RATE, "unit_names": list(ARKIT_UNITS),
        "weights_dtype": "float16", "subjects": [s.name for s in subjects],
        "subject_splits": {s.name: s.split for s in subjects},
        "splits": splits, "minutes_requested": config.minutes,
        "template": {"n_vertices": int(template.n_vertices),
                     "format_version": int(template.metadata.get("format_version", 0))},
        "lip_closure_model": [round(c, 6) for c in closure_model],
        "frame_convention": "frame k covers [k/fps, (k+1)/fps); weights sampled at its centre",
        "test_a_rule": f"seen subjects, every {TEST_A_EVERY}th utterance, sentences from a held-out pool",
    }
    dump_json(out / "meta.json", meta)
    return {"synthesis_seconds": synth_seconds, "n_utterances": len(entries), "meta": meta}
