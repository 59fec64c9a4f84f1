"""Synthetic TexTalk4D build: determinism, splits, reader, map rendering."""
from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]

from tools.synthetic_textalk4d import SyntheticTextalk4D  # noqa: E402
from tools.synthetic_textalk4d.builder import BuildConfig, build  # noqa: E402
from tools.synthetic_textalk4d.stats import compute_stats  # noqa: E402

pytestmark = pytest.mark.skipif(shutil.which("flite") is None or shutil.which("sox") is None,
                                reason="needs the Debian packages flite and sox")


def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tiny") / "ds"
    build(BuildConfig(out=root, subjects=2, minutes=0.3, seed=5), log=lambda *a: None)
    return root


def test_same_seed_same_bytes_other_seed_other_bytes(tiny, tmp_path):
    # Both builds run on this machine, in this process: the check is processor-independent by
    # construction. It proves the builder has no hidden state (time, unsorted iteration, unseeded
    # randomness); it does not claim the same bytes on another CPU (docs/DATASET.md says so).
    again = tmp_path / "again"
    build(BuildConfig(out=again, subjects=2, minutes=0.3, seed=5), log=lambda *a: None)
    first, second = _digest(tiny), _digest(again)
    assert len(first) > 8
    assert first == second
    other = tmp_path / "other"
    build(BuildConfig(out=other, subjects=2, minutes=0.3, seed=6), log=lambda *a: None)
    third = _digest(other)
    assert third["meta.json"] != first["meta.json"]
    assert third.get("audio/S00/S00_0000.flac") != first["audio/S00/S00_0000.flac"]


def test_layout_and_splits(tiny):
    meta = json.loads((tiny / "meta.json").read_text())
    assert meta["fps"] == 30 and meta["sample_rate"] == 16000 and len(meta["unit_names"]) == 52
    assert meta["subject_splits"] == {"S00": "train", "S01": "test-B"}
    entries = json.loads((tiny / "utterances.json").read_text())
    by_split = {s: [e for e in entries if e["split"] == s] for s in ("train", "test-A", "test-B")}
    assert by_split["train"] and by_split["test-B"]
    assert {e["subject"] for e in by_split["test-B"]} == {"S01"}
    assert "S01" not in {e["subject"] for e in by_split["train"] + by_split["test-A"]}
    train_text = {e["text"] for e in by_split["train"]}
    assert not train_text & {e["text"] for e in by_split["test-A"] + by_split["test-B"]}
    for subject in ("S00", "S01"):
        seconds = sum(e["duration_s"] for e in entries if e["subject"] == subject)
        assert 9.0 <= seconds < 9.0 + 8.0           # 0.3 min / 2 subjects, whole sentences
    for e in entries:
        weights = np.load(tiny / e["weights"])
        assert weights.dtype == np.float16 and weights.shape == (e["n_frames"], 52)
        assert e["n_frames"] == int(round(e["n_samples"] / 16000 * 30))


def test_reader_returns_consistent_sample(tiny):
    ds = SyntheticTextalk4D(tiny, "train")
    assert len(ds) >= 1 and ds.unit_names == list(ds.template.unit_names)
    sample = ds[0]
    t = sample.n_frames
    v = ds.template.n_vertices
    assert sample.audio.dtype == np.float32 and sample.sample_rate == 16000
    assert abs(len(sample.audio) / 16000 * 30 - t) <= 0.5
    assert sample.weights.shape == (t, 52)
    assert sample.offsets.shape == (t, v, 3)
    assert sample.motion_maps.shape == (t, 64, 64, 3)
    assert sample.wrinkle_maps.shape == (t, 128, 128, 3)
    # offsets follow the weights through the template; motion maps are the rasterised offsets
    np.testing.assert_allclose(sample.offsets, ds.template.apply_units(sample.weights), atol=1e-6)
    np.testing.assert_allclose(sample.motion_maps, ds.template.uv_rasterizer(64).rasterize(sample.offsets),
                               atol=1e-6)
    assert 0.005 < np.abs(sample.offsets).max() < 0.05       # metres: millimetres to centimetres
    fold, shade, flush = (sample.wrinkle_maps[..., c] for c in range(3))   # core/wrinkle_channels.py
    assert fold.min() >= 0.0 and fold.max() <= 1.0 and shade.min() >= 0.0 and flush.min() >= 0.0
    assert (fold > 0.5).any() and (shade > 0.01).any()       # some creases fold while talking
    assert sample.subject == "S00" and sample.subject_index == 0
    labels = {sample.phoneme_at(k) for k in range(t)}
    assert "pau" in labels and len(labels) > 5
    albedo = ds.neutral_albedo("S00", 64)
    assert albedo.shape == (64, 64, 3) and 0.05 < albedo.mean() < 0.95


def test_cache_and_frame_batches(tiny, tmp_path):
    ds = SyntheticTextalk4D(tiny, "all", cache_dir=tmp_path / "cache")
    first = ds[0]
    assert list((tmp_path / "cache").rglob("*.npz"))
    cached = ds[0]
    np.testing.assert_allclose(cached.wrinkle_maps, first.wrinkle_maps, atol=2e-3)   # float16 cache
    np.testing.assert_allclose(cached.motion_maps, first.motion_maps, atol=1e-4)
    total = sum(e["n_frames"] for e in ds.entries)
    batches = list(ds.iter_frames(100, shuffle=True, seed=1))
    assert sum(len(b["weights"]) for b in batches) == total
    assert all(len(b["weights"]) == 100 for b in batches[:-1])
    assert batches[0]["motion_maps"].shape[1:] == (64, 64, 3)
    assert batches[0]["wrinkle_maps"].shape[1:] == (128, 128, 3)
    assert set(np.concatenate([b["subject_index"] for b in batches])) == {0, 1}


def test_map_rendering_is_fast(tiny):
    ds = SyntheticTextalk4D(tiny, "all")
    weights = np.concatenate([ds.weights(i) for i in range(len(ds))])
    weights = np.concatenate([weights] * (1 + 600 // len(weights)))[:600]
    ds.render("S00", weights[:8])                              # set-up outside the timing
    started = time.perf_counter()
    offsets, motion, wrinkle = ds.render("S00", weights)
    fps = len(weights) / (time.perf_counter() - started)
    assert motion.shape[0] == wrinkle.shape[0] == 600
    assert fps > 150, fps   # ~1,000 frames/s measured on 2 busy cores


def test_stats_and_subject_styles_differ(tiny):
    stats = compute_stats(tiny, wrinkle_frames_per_subject=30)
    assert stats["splits"]["train"]["utterances"] >= 1
    assert stats["test_a_sentences_in_train"] == 0
    assert stats["lips"]["bilabial_gap_mm"]["p90"] < 1.5
    assert stats["lips"]["open_vowel_gap_mm"]["mean"] > 6.0
    s0, s1 = stats["subjects"]["S00"], stats["subjects"]["S01"]
    assert s0["voice"] != s1["voice"]
    assert (s0["jawOpen_p95"], s0["mouthSmile_mean"]) != (s1["jawOpen_p95"], s1["mouthSmile_mean"])


def test_utterances_record_language_engine_and_acoustics(tiny):
    entries = json.loads((tiny / "utterances.json").read_text())
    for e in entries:
        assert e["language"] == "en" and e["engine"] == "flite"
        assert e["sentence_id"].startswith(("en_train_", "en_test_"))
        assert (e["split"] == "train") == e["sentence_id"].startswith("en_train_")
        if e["split"] != "train":
            assert e["acoustics"] == {"effects": []}          # test splits stay clean
        # phonemes tile the (possibly speed-changed) audio
        phonemes = e["phonemes"]
        assert phonemes[0][1] == 0.0 and phonemes[-1][2] == pytest.approx(e["duration_s"], abs=1e-4)
        assert e["n_samples"] == pytest.approx(e["duration_s"] * 16000, abs=1)
    assert any(e["acoustics"]["effects"] for e in entries if e["split"] == "train")


@pytest.fixture(scope="module")
def multilingual(tmp_path_factory) -> Path:
    """Subjects S00-S05 of the voice plan (flite, Festival English, espeak-ng Spanish in test-B),
    one or two sentences each."""
    root = tmp_path_factory.mktemp("multilingual") / "ds"
    build(BuildConfig(out=root, subjects=6, minutes=0.25, seed=2, test_b_subjects=1), log=lambda *a: None)
    return root


def test_multilingual_build_is_reproducible_and_records_its_sources(multilingual, tmp_path):
    again = tmp_path / "again"
    build(BuildConfig(out=again, subjects=6, minutes=0.25, seed=2, test_b_subjects=1), log=lambda *a: None)
    assert _digest(multilingual) == _digest(again)
    meta = json.loads((multilingual / "meta.json").read_text())
    assert meta["format_version"] == 2
    assert meta["voices"]["S04"] == {"engine": "festival", "voice": "kal_diphone", "language": "en"}
    assert meta["voices"]["S05"] == {"engine": "espeak", "voice": "es+f3", "language": "es"}
    spanish = meta["languages"]["es"]
    assert spanish["subjects"] == ["S05"] and spanish["package"] == "wspanish"
    from tools.synthetic_textalk4d.text_languages import wordlist_fingerprint
    assert spanish["sha256"] == wordlist_fingerprint("es")
    entries = json.loads((multilingual / "utterances.json").read_text())
    by_subject = {e["subject"]: e for e in entries}
    assert by_subject["S05"]["language"] == "es" and by_subject["S05"]["split"] == "test-B"
    assert by_subject["S05"]["sentence_id"].startswith("es_test_")
    assert by_subject["S04"]["engine"] == "festival"
    subject = json.loads((multilingual / "subjects" / "S05.json").read_text())
    assert subject["voice"]["engine"] == "espeak" and subject["voice"]["language"] == "es"
    ds = SyntheticTextalk4D(multilingual, "test-B", maps=False)
    assert ds.subjects["S05"].voice.voice == "es+f3"


def test_test_a_phone_copies_test_a_over_a_telephone_line(tmp_path):
    root = tmp_path / "one"
    # One subject, 30 s: about 11 sentences, the 10th in test-A (no test-B with one subject).
    build(BuildConfig(out=root, subjects=1, minutes=0.5, seed=4), log=lambda *a: None)
    meta = json.loads((root / "meta.json").read_text())
    entries = {e["id"]: e for e in json.loads((root / "utterances.json").read_text())}
    assert meta["splits"]["test-A"] and len(meta["splits"]["test-A-phone"]) == len(meta["splits"]["test-A"])
    from tools.synthetic_textalk4d.speech import read_audio
    for test_id in meta["splits"]["test-A"]:
        copy = entries[test_id + "_phone"]
        original = entries[test_id]
        assert copy["copy_of"] == test_id and copy["split"] == "test-A-phone"
        assert copy["weights"] == original["weights"] and copy["phonemes"] == original["phonemes"]
        assert copy["acoustics"]["effects"] == ["telephone"]
        phone, clean = read_audio(root / copy["audio"]), read_audio(root / original["audio"])
        assert len(phone) == len(clean)
        spectrum = np.abs(np.fft.rfft(phone.astype(np.float64))) ** 2
        freqs = np.fft.rfftfreq(len(phone), 1 / 16000)
        assert spectrum[freqs > 4000].sum() < 1e-5 * spectrum.sum()
    stats = compute_stats(root, wrinkle_frames_per_subject=5)
    assert stats["splits"]["test-A-phone"]["utterances"] == len(meta["splits"]["test-A"])
    # the copies are not counted twice in the phoneme statistics
    n_test_a_phones = sum(len(entries[i]["phonemes"]) for i in meta["splits"]["test-A"])
    total = sum(v["count"] for v in stats["phonemes"].values())
    assert total <= sum(len(e["phonemes"]) for e in entries.values()) - n_test_a_phones


def test_missing_planned_voice_stops_the_build_before_synthesis(tmp_path, monkeypatch):
    from tools.synthetic_textalk4d import voice_plan
    from tools.synthetic_textalk4d.speech import SpeechToolsMissing
    real = voice_plan.voice_installed
    monkeypatch.setattr(voice_plan, "voice_installed",
                        lambda choice: choice.voice != "kal_diphone" and real(choice))
    out = tmp_path / "never"
    with pytest.raises(SpeechToolsMissing, match="festvox-kallpc16k"):
        build(BuildConfig(out=out, subjects=6, minutes=0.1), log=lambda *a: None)
    assert not out.exists()


def test_command_line_refuses_to_overwrite(tiny):
    result = subprocess.run([sys.executable, str(REPO / "tools" / "make_dataset.py"), "--out", str(tiny),
                             "--subjects", "2", "--minutes", "0.1", "--no-docs"],
                            capture_output=True, text=True)
    assert result.returncode == 2 and "--force" in result.stderr
