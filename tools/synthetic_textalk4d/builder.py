"""Build the synthetic TexTalk4D dataset: subjects, speech, phoneme timings, face-unit weights.

Layout of the output folder (all JSON written with sorted keys, no timestamps, so the same seed
gives the same bytes):
    meta.json                   format, seed, fps, unit names, subjects, splits
    subjects/S00.json           identity, voice, speaking style, wrinkle style, skin tone
    utterances.json             per utterance: id, subject, split, language, engine, voice, text,
                                sentence id, acoustic condition, phonemes, frames, files
    audio/S00/S00_0000.flac     16 kHz mono, 16-bit FLAC (test-A-phone copies: S00_0009_phone.flac)
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

from . import acoustics, text_languages
from .motion import FPS, face_unit_weights
from .speech import SAMPLE_RATE, SpeechToolsMissing, ensure_speech_tools, write_flac
from .styles import Subject, make_subject
from .visemes import ARKIT_UNITS
from .voice_plan import missing_requirements, planned_choice
from .voices import sentences_for, synthesize

FORMAT_VERSION = 2         # 2: engines and languages per subject, acoustic conditions, test-A-phone
DATASET_NAME = "synthetic-textalk4d"
SPLITS = ("train", "test-A", "test-B", "test-A-phone")
TEST_A_EVERY = 10          # every 10th utterance of a seen subject uses a held-out sentence
TEST_POOL_SIZE = 300       # held-out sentences per language (test-A and test-B speak only these)
SECONDS_PER_SENTENCE = 2.5 # for sizing the sentence pools (word-list sentences run longer)


@dataclasses.dataclass
class BuildConfig:
    out: Path
    subjects: int = 24
    minutes: float = 60.0
    seed: int = 0
    test_b_subjects: int | None = None   # default: one in six (4 of 24)
    jobs: int = 1
    acoustics: bool = True               # acoustic conditions on train utterances
    phone_copy: bool = True              # test-A-phone: a telephone copy of test-A

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


def check_voices(subjects: list[Subject]) -> None:
    """Fail before any synthesis when a planned voice or word list is not installed."""
    problems = missing_requirements([planned_choice(s.index) for s in subjects])
    if problems:
        raise SpeechToolsMissing(
            "The dataset's voice plan needs voices or word lists that are not installed:\n  "
            + "\n  ".join(problems)
            + "\nInstall the Debian packages named above (sudo apt-get install ...), or run "
              "tools/setup_env.sh, which installs all of them.")


def _sentence_pools(config: BuildConfig, subjects: list[Subject]) -> dict[str, tuple[list[str], list[str]]]:
    """language -> (train pool, held-out test pool). Enough distinct sentences that a language's
    subjects rarely repeat one; each language's sentences come from its own seeded stream, so
    adding a language changes no other language's sentences."""
    seconds = config.minutes * 60.0 / max(config.subjects, 1)
    pools = {}
    for language in sorted({s.voice.language for s in subjects}):
        speakers = sum(1 for s in subjects if s.voice.language == language)
        expected = int(speakers * seconds / SECONDS_PER_SENTENCE) + 1
        sentences = sentences_for(language, TEST_POOL_SIZE + max(200, expected), config.seed)
        pools[language] = (sentences[TEST_POOL_SIZE:], sentences[:TEST_POOL_SIZE])
    return pools


def _build_subject(args) -> list[dict]:
    out, subject_dict, seconds, seed, train_pool, test_pool, closure_model, options = args
    subject = Subject.from_dict(subject_dict)
    rng = np.random.default_rng([seed, 0x5E47, subject.index])
    sentence_ids = _sentence_ids(subject.voice.language, train_pool, test_pool)
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
        clean_audio = audio
        # Own stream per utterance: the condition never changes which sentences are spoken.
        condition = acoustics.AcousticCondition()
        if split == "train" and options["acoustics"]:
            condition = acoustics.draw_condition(
                np.random.default_rng([seed, 0xAC057, subject.index, number]))
        # Before the weights: a speed change moves the phonemes, the labels follow them.
        audio, phonemes = acoustics.apply(audio, phonemes, condition)
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
        entry = {
            "id": utterance_id, "subject": subject.name, "subject_index": subject.index,
            "split": split, "language": subject.voice.language, "engine": subject.voice.engine,
            "voice": subject.voice.voice, "text": text, "sentence_id": sentence_ids[text],
            "acoustics": condition.to_dict(),
            "duration_s": round(duration, 6), "n_frames": int(weights.shape[0]),
            "n_samples": int(len(audio)), "audio": audio_rel, "weights": weights_rel,
            "phonemes": [p.to_list() for p in phonemes],
        }
        entries.append(entry)
        if split == "test-A" and options["phone_copy"]:
            entries.append(_phone_copy(out, entry, clean_audio, seed, subject.index, number))
        total += duration
        number += 1
    return entries


def _phone_copy(out: Path, entry: dict, clean_audio: np.ndarray, seed: int, subject_index: int,
                number: int) -> dict:
    """The test-A utterance over a telephone line: same timing, so same weights file."""
    condition = acoustics.telephone_condition(
        np.random.default_rng([seed, 0xF0E, subject_index, number]))
    audio, _ = acoustics.apply(clean_audio, [], condition)
    utterance_id = entry["id"] + "_phone"
    audio_rel = f"audio/{entry['subject']}/{utterance_id}.flac"
    write_flac(out / audio_rel, audio)
    return {**entry, "id": utterance_id, "split": "test-A-phone", "audio": audio_rel,
            "acoustics": condition.to_dict(), "copy_of": entry["id"]}


def _sentence_ids(language: str, train_pool: list[str], test_pool: list[str]) -> dict[str, str]:
    """sentence -> "<language>_test_0012" / "<language>_train_00345" (the pools are distinct)."""
    ids = {text: f"{language}_train_{i:05d}" for i, text in enumerate(train_pool)}
    ids.update({text: f"{language}_test_{i:04d}" for i, text in enumerate(test_pool)})
    return ids


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
    subjects = make_subjects(config)
    check_voices(subjects)
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    for subject in subjects:
        dump_json(out / "subjects" / f"{subject.name}.json", subject.to_dict())
    pools = _sentence_pools(config, subjects)
    seconds = config.minutes * 60.0 / max(config.subjects, 1)
    options = {"acoustics": config.acoustics, "phone_copy": config.phone_copy}
    tasks = [(str(out), s.to_dict(), seconds, config.seed, *pools[s.voice.language], closure_model,
              options) for s in subjects]
    entries: list[dict] = []
    log(f"synthesising {config.subjects} subjects x {seconds:.0f} s of speech with {config.jobs} job(s)")
    if config.jobs > 1:
        with concurrent.futures.ProcessPoolExecutor(config.jobs) as pool:
            for subject, result in zip(subjects, pool.map(_build_subject, tasks)):
                entries += result
                log(f"  {subject.name}: {sum(1 for e in result if not e.get('copy_of'))} utterances")
    else:
        for subject, task in zip(subjects, tasks):
            result = _build_subject(task)
            entries += result
            spoken = [e for e in result if not e.get("copy_of")]
            log(f"  {subject.name}: {len(spoken)} utterances, {sum(e['duration_s'] for e in spoken):.0f} s")
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
        "test_a_phone_rule": ("copies of test-A through a telephone line (acoustics.telephone_line), "
                              "same weights; test splits are otherwise clean") if config.phone_copy else None,
        "voices": {s.name: {"engine": s.voice.engine, "voice": s.voice.voice,
                            "language": s.voice.language} for s in subjects},
        "languages": _language_sources(subjects),
        "acoustics": _acoustics_meta() if config.acoustics else None,
    }
    dump_json(out / "meta.json", meta)
    return {"synthesis_seconds": synth_seconds, "n_utterances": len(entries), "meta": meta}


def _language_sources(subjects: list[Subject]) -> dict:
    """Per language its subjects and where its text comes from: the word list's package and
    sha256 (same seed + same list = same sentences), or text.py's grammar for English."""
    languages = {}
    for language in sorted({s.voice.language for s in subjects}):
        if language == "en":
            source = {"generator": "tools/synthetic_textalk4d/text.py"}
        else:
            spec = text_languages.WORD_LISTS[language]
            source = {"generator": "tools/synthetic_textalk4d/text_languages.py",
                      "word_list": spec.path, "package": spec.package,
                      "sha256": text_languages.wordlist_fingerprint(language)}
        languages[language] = {"subjects": [s.name for s in subjects if s.voice.language == language],
                               **source}
    return languages


def _acoustics_meta() -> dict:
    return {
        "applies_to": "train utterances (test splits clean; test-A-phone: telephone only)",
        "clean_probability": round(acoustics.CLEAN_PROBABILITY, 4),
        "effect_probability": acoustics.EFFECT_PROBABILITY,
        "speed_range": acoustics.SPEED_RANGE, "pitch_semitones": acoustics.PITCH_SEMITONES,
        "snr_range_db": acoustics.SNR_RANGE_DB, "level_range_db": acoustics.LEVEL_RANGE_DB,
        "dc_range": acoustics.DC_RANGE, "clip_fraction_range": acoustics.CLIP_FRACTION_RANGE,
        "noise_kinds": acoustics.NOISE_KINDS, "telephone_codecs": acoustics.TELEPHONE_CODECS,
        "telephone_band_hz": acoustics.TELEPHONE_BAND_HZ,
    }
