"""Real-speech lip-sync checks (tools/real_speech): the measures and checks on constructed clips,
the synthetic ground truth passing them, the recordings and their timings, and the bundled model
on the real recordings (skipped while the bundle is untrained)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]

from tools.real_speech import checks  # noqa: E402
from tools.real_speech.measures import (  # noqa: E402
    distance_to_speech,
    frame_levels_db,
    lip_vertex_pair,
    mouth_aperture_mm,
    rest_aperture_mm,
    voice_activity,
)
from tools.real_speech.recordings import (  # noqa: E402
    DATA_DIR,
    alignment_error_ms,
    available_recordings,
    consensus_alignment,
    read_htk_phone_labels,
)
from tools.real_speech.reference import aperture_from_unit_weights, derive_thresholds  # noqa: E402

RATE = 16000
FPS = 30.0
needs_flite = pytest.mark.skipif(shutil.which("flite") is None or shutil.which("sox") is None,
                                 reason="needs the Debian packages flite and sox")


def _voiced(seconds: float, rng) -> np.ndarray:
    """A vowel-like signal: 150 Hz harmonics with a little noise, ~-20 dBFS."""
    t = np.arange(int(seconds * RATE)) / RATE
    tone = sum(np.sin(2 * np.pi * 150 * k * t) / k for k in range(1, 12))
    signal = tone / np.abs(tone).max() * 0.15 + 0.003 * rng.standard_normal(t.size)
    return signal.astype(np.float32)


def _silence(seconds: float, rng) -> np.ndarray:
    return (1e-4 * rng.standard_normal(int(seconds * RATE))).astype(np.float32)  # -80 dBFS floor


@pytest.fixture(scope="module")
def speech_clip():
    """0.6 s silence, 'word' 0.5 s, 60 ms gap (a stop closure), 'word' 0.5 s, 0.8 s silence."""
    rng = np.random.default_rng(0)
    parts = [_silence(0.6, rng), _voiced(0.5, rng), _silence(0.06, rng), _voiced(0.5, rng),
             _silence(0.8, rng)]
    audio = np.concatenate(parts)
    n_frames = int(np.ceil(audio.size / RATE * FPS))
    times = (np.arange(n_frames) + 0.5) / FPS
    in_speech = (times >= 0.6) & (times < 1.66)
    return audio, n_frames, times, in_speech


@pytest.fixture(scope="module")
def template():
    from textalker_blender.core.template import load_template

    return load_template()


# ------------------------------------------------------------------------------- measures
def test_levels_and_voice_activity_find_the_words_and_fill_the_stop_gap(speech_clip):
    audio, n_frames, times, in_speech = speech_clip
    levels = frame_levels_db(audio, n_frames)
    assert levels.shape == (n_frames,)
    assert np.all(levels[times < 0.5] < -70) and np.median(levels[in_speech]) > -30
    speech = voice_activity(levels)
    # the 60 ms gap between the words is a stop closure: speech, not silence
    gap = (times > 1.1) & (times < 1.16)
    assert speech[gap].all()
    inner = (times > 0.65) & (times < 1.6)
    assert speech[inner].all()
    assert not speech[times < 0.55].any() and not speech[times > 1.75].any()
    distance = distance_to_speech(speech)
    assert distance[speech].max() == 0
    assert distance[0] == np.argmax(speech)  # frames from the first frame to the first word


def test_voice_activity_drops_a_click_and_keeps_digital_silence_silent():
    levels = np.full(60, -120.0)
    levels[10] = -20.0  # one loud frame (33 ms) alone: a click, not a word
    levels[30:45] = -25.0
    speech = voice_activity(levels)
    assert not speech[10] and speech[30:45].all() and speech.sum() == 15
    assert distance_to_speech(np.zeros(5, bool)).min() > 1000  # no speech at all


def test_aperture_is_the_dataset_lip_gap(template):
    from tools.synthetic_textalk4d.geometry import lip_gap

    upper, lower = lip_vertex_pair(template)
    assert upper != lower and template.lip_mask[upper] and template.lip_mask[lower]
    assert template.vertices[upper, 2] > template.vertices[lower, 2]  # upper lip above
    rng = np.random.default_rng(1)
    offsets = rng.normal(scale=0.002, size=(4, template.n_vertices, 3)).astype(np.float32)
    expected = lip_gap(template, template.vertices.astype(np.float64) + offsets) * 1000
    np.testing.assert_allclose(mouth_aperture_mm(template, offsets), expected, atol=1e-4)
    rest = rest_aperture_mm(template)
    assert 0.0 < rest < 2.0  # lips nearly together at the neutral
    jaw = np.zeros(52, np.float32)
    jaw[template.unit_index("jawOpen")] = 1.0
    opened = aperture_from_unit_weights(template, jaw[None])[0]
    np.testing.assert_allclose(
        opened, mouth_aperture_mm(template, template.apply_units(jaw[None]))[0], atol=1e-3)
    assert opened > rest + 10.0  # jawOpen opens the mouth by centimetres


# ------------------------------------------------------------------------------- checks
def _mouth(times, in_speech, open_mm, rest_mm=0.6):
    """An aperture that opens (smoothly) during `in_speech`."""
    curve = np.where(in_speech, open_mm, rest_mm).astype(np.float64)
    kernel = np.hanning(5) / np.hanning(5).sum()
    return np.convolve(curve, kernel, mode="same")


def test_a_mouth_that_follows_speech_passes(speech_clip):
    audio, n_frames, times, in_speech = speech_clip
    bilabials = [("b", 1.10, 1.16)]  # the closure between the words
    aperture = _mouth(times, in_speech, 16.0)
    aperture[(times > 1.05) & (times < 1.2)] = -1.0  # lips pressed for /b/
    stats = checks.clip_statistics(checks.measure_clip(aperture, audio, bilabials))
    results = checks.evaluate(stats, checks.THRESHOLDS)
    assert all(r.passed for r in results.values()), results
    assert checks.clip_passes(results) is True
    assert stats.loud_vs_silence_auc > 0.9 and stats.bilabial_minima_mm == [-1.0]


def test_a_mouth_that_opens_only_in_silence_fails(speech_clip):
    audio, n_frames, times, in_speech = speech_clip
    aperture = _mouth(times, ~in_speech, 16.0)
    results = checks.evaluate(checks.clip_statistics(checks.measure_clip(aperture, audio, [("m", 1.10, 1.16)])))
    assert results["silence_closed"].passed is False
    assert results["speech_open"].passed is False
    assert results["speech_vs_silence"].passed is False
    assert results["speech_vs_silence"].value < 0.1
    assert checks.clip_passes(results) is False


def test_a_frozen_mouth_fails_and_a_bilabial_left_open_fails(speech_clip):
    audio, n_frames, times, in_speech = speech_clip
    frozen = checks.evaluate(checks.clip_statistics(checks.measure_clip(np.full(n_frames, 0.6), audio)))
    assert frozen["silence_closed"].passed is True  # closed, but...
    assert frozen["speech_open"].passed is False  # ...never opens
    assert frozen["speech_vs_silence"].passed is False  # ties: AUC 0.5
    assert frozen["bilabial_closure"].passed is None  # no timing given: not applicable
    open_lips = _mouth(times, in_speech, 16.0)  # opens on speech but never closes for the /b/
    results = checks.evaluate(checks.clip_statistics(checks.measure_clip(open_lips, audio, [("b", 1.10, 1.16)])))
    assert results["speech_open"].passed and results["bilabial_closure"].passed is False


def test_checks_without_data_are_not_applicable():
    stats = checks.ClipStatistics(10, 10, 0, 5, None, 12.0, None, [])
    results = checks.evaluate(stats, checks.Thresholds(3.0, 9.0, 0.6, 1.7))
    assert [r.passed for r in results.values()] == [None, True, None, None]
    assert checks.clip_passes(results) is True
    assert checks.clip_passes(checks.evaluate(checks.ClipStatistics(10, 0, 0, 0, None, None, None, []))) is None


def test_the_set_verdict_tolerates_one_miss_in_ten_but_not_a_broken_check():
    def clip(silence, speech):
        return checks.evaluate(checks.ClipStatistics(40, 20, 10, 10, silence, speech, 0.9, []))

    good, bad_silence = clip(0.5, 15.0), clip(8.0, 15.0)
    assert checks.set_passes([good] * 9 + [bad_silence])
    assert checks.pass_rates([good] * 9 + [bad_silence])["silence_closed"] == (9, 10)
    assert not checks.set_passes([good] * 7 + [bad_silence] * 3)
    assert not checks.set_passes([clip(0.5, 3.0)] * 10)  # never opens: every clip fails speech_open


@needs_flite
def test_synthetic_ground_truth_passes_and_thresholds_derive_from_it(template):
    """A dataset subject speaking a sentence with bilabials: the ground-truth mouth passes."""
    from tools.synthetic_textalk4d.geometry import lip_closure_model
    from tools.synthetic_textalk4d.motion import face_unit_weights
    from tools.synthetic_textalk4d.voices import synthesize
    from tools.synthetic_textalk4d.styles import make_subject
    from tools.synthetic_textalk4d.visemes import ARKIT_UNITS
    from textalker_blender.core.audio import load_audio

    sentence = "Bob and Pam bought a big map. Then the palm market by the harbor opened."
    subject = make_subject(7, 2, "train")
    audio, phonemes = synthesize(sentence, subject.voice)
    weights = face_unit_weights(phonemes, sentence, len(audio) / RATE, subject.speaking,
                                np.random.default_rng(0), lip_closure_model=lip_closure_model(template))
    template_weights = np.zeros_like(weights)
    template_weights[:, [template.unit_names.index(n) for n in ARKIT_UNITS]] = weights
    truth = aperture_from_unit_weights(template, template_weights)
    bilabials = [(p.label, p.start, p.end) for p in phonemes]
    stats = checks.clip_statistics(checks.measure_clip(truth, load_audio((audio, RATE)), bilabials))
    assert len(stats.bilabial_minima_mm) >= 6
    results = checks.evaluate(stats)
    assert checks.clip_passes(results) is True, results
    # the same clip with its mouth reversed in time no longer lines up with the audio
    reversed_stats = checks.clip_statistics(checks.measure_clip(truth[::-1].copy(), load_audio((audio, RATE)), bilabials))
    assert checks.clip_passes(checks.evaluate(reversed_stats)) is False

    class OneClipReference:
        ground_truth = [stats]
        open_vowel_apertures_mm = [12.0, 14.0, 20.0]
        rest_mm = rest_aperture_mm(template)

    derived = derive_thresholds(OneClipReference())
    assert derived.bilabial_max_mm == pytest.approx(rest_aperture_mm(template) + 1.0, abs=0.01)
    assert derived.silence_max_mm == pytest.approx(stats.silence_aperture_mm, abs=0.01)
    assert 12.0 <= derived.speech_open_min_mm <= 14.0


# ------------------------------------------------------------------------------- recordings
def test_copied_recordings_are_small_licensed_and_timed():
    files = sorted(p for p in DATA_DIR.iterdir() if p.is_file())
    assert sum(p.stat().st_size for p in files) < 1_000_000
    sources = (DATA_DIR / "SOURCES.md").read_text()
    for name in ("arctic_a0009.wav", "arctic_a0007.wav", "amfm_decompy_sample.wav"):
        assert (DATA_DIR / name).is_file() and name in sources
    assert "Carnegie Mellon" in (DATA_DIR / "COPYING.cmu_arctic").read_text()
    phones = read_htk_phone_labels(DATA_DIR / "arctic_a0009_phone.lab")
    assert phones[0][0] == "sil" and phones[-1][0] == "sil"
    bilabials = [p for p in phones if p[0] in {"p", "b", "m"}]
    assert bilabials == [("p", 0.815, 0.905), ("b", 2.68, 2.75)]  # "sharply", "table"
    assert phones[-1][2] == pytest.approx(3.075)  # the labels cover the 3.1 s recording


def test_available_recordings_lists_every_copied_file():
    recordings = {r.name: r for r in available_recordings(align=False)}
    assert {"arctic_a0009", "arctic_a0007", "amfm_decompy_sample"} <= set(recordings)
    assert len(recordings["arctic_a0009"].bilabials) == 2
    for recording in recordings.values():
        assert recording.path.is_file() and recording.licence and recording.source
    if Path("/usr/share/sounds/alsa/Front_Center.wav").is_file():
        assert recordings["alsa_Front_Center"].transcript == "Front center"
        assert sum(name.startswith("alsa_") for name in recordings) == 8


@needs_flite
def test_flite_dtw_alignment_finds_the_bilabials_of_a_labelled_recording():
    from textalker_blender.core.audio import load_audio

    audio = load_audio(DATA_DIR / "arctic_a0009.wav")
    aligned = consensus_alignment(audio, "He turned sharply, and faced Gregson across the table.")
    error = alignment_error_ms(aligned, read_htk_phone_labels(DATA_DIR / "arctic_a0009_phone.lab"))
    assert error["comparable"], "flite's phone sequence should match the published labels"
    assert error["mean_ms"] < 60 and max(error["bilabial_ms"]) < 50


# ------------------------------------------------------------------------------- the bundled model
def _bundle_is_trained() -> bool:
    from textalker_blender.core.pipeline import DEFAULT_WEIGHTS

    from safetensors import safe_open

    with safe_open(str(DEFAULT_WEIGHTS), "pt") as handle:
        return (handle.metadata() or {}).get("trained") == "true"


# Bundles measured to fail the real-speech verdict (docs/REAL_SPEECH.md). For these the test
# still runs the checks, and reports the failure as xfail with the numbers; any other trained
# bundle (a retrain) must pass. Remove an entry when its bundle is replaced.
KNOWN_FAILING_BUNDLES: dict[str, tuple[str, str]] = {
    # sha256 -> (the failing check, why); the step-2955 bundle (92acf87b...) failed
    # silence_closed on 7 of 10 clips and was replaced by the pause-trained step-7600 bundle.
}


def test_bundled_model_lip_syncs_real_speech():
    if not _bundle_is_trained():
        pytest.skip("the bundled weights' metadata says trained=false (random weights): the real-speech "
                    "check is meaningful only for the trained bundle")
    import torch

    from tools.real_speech.run import check_recording
    from textalker_blender.core.pipeline import Pipeline

    torch.set_num_threads(1)
    pipeline = Pipeline.load(device="cpu")
    results = [check_recording(pipeline, recording)
               for recording in available_recordings(align=shutil.which("flite") is not None)]
    failures = {r.recording.name: {k: (v.value, v.threshold) for k, v in r.checks.items() if v.passed is False}
                for r in results if r.passed is False}
    known = KNOWN_FAILING_BUNDLES.get(pipeline.weights_sha256)
    if known and not checks.set_passes([r.checks for r in results]):
        failing_check, reason = known
        rates = checks.pass_rates([r.checks for r in results])
        # Every other check must still pass: the known failure excuses one check, not the model.
        others = {name: rate for name, rate in rates.items() if name != failing_check}
        assert all(passed >= checks.MIN_PASS_RATE * applicable for passed, applicable in others.values() if applicable), (
            f"checks other than the known {failing_check} failure regressed: {others}")
        pytest.xfail(f"{reason}; pass rates {rates}")
    assert checks.set_passes([r.checks for r in results]), (
        f"pass rates {checks.pass_rates([r.checks for r in results])}; failed (value, threshold): {json.dumps(failures)}")


@pytest.mark.slow
def test_tool_writes_the_report_without_a_dataset(tmp_path):
    """The whole tool on the bundle (any weights) with no dataset: report, PNG and JSON."""
    from tools import real_speech_check

    out = tmp_path / "REAL_SPEECH.md"
    # --original-only keeps CI's time: the original recordings and their telephone versions
    status = real_speech_check.main(["--dataset", str(tmp_path / "no_dataset"), "--out", str(out),
                                     "--json", str(tmp_path / "numbers.json"), "--original-only"])
    text = out.read_text()
    numbers = json.loads((tmp_path / "numbers.json").read_text())
    assert "## Results per recording" in text and "| arctic_a0009 |" in text
    assert "## Issue #19 targets per language and band" in text and "| arctic_a0009_tel |" in text
    assert {"bilabials_closed", "rest_after_speech", "lag"} <= set(numbers["targets"]["**all**"])
    assert (tmp_path / "real_speech_aperture.png").stat().st_size < 200_000
    assert status == (0 if numbers["verdict"] else 1)
    if not numbers["weights"]["trained"]:
        assert status == 1 and "untrained" in text  # random weights must not pass


def test_spectral_matching_moves_the_long_term_spectrum_to_the_target():
    """The equaliser experiment: a steeply tilted clip matched to a flat target gets flatter,
    and its length and (after load_audio) loudness stay as they were."""
    from scipy.signal import lfilter

    from tools.real_speech.equalise import long_term_spectrum_db, match_spectrum
    from textalker_blender.core.audio import load_audio

    rng = np.random.default_rng(3)
    white = rng.standard_normal(RATE * 2).astype(np.float32) * 0.1
    tilted = lfilter([1.0], [1.0, -0.9], white).astype(np.float32)  # strong low-pass tilt
    clip = load_audio((np.concatenate([np.zeros(RATE // 2, np.float32), tilted]), RATE))
    target = long_term_spectrum_db(load_audio((white, RATE)))
    before = long_term_spectrum_db(clip)
    after = long_term_spectrum_db(load_audio((match_spectrum(clip, target), RATE)))

    def shape_error(spectrum):
        difference = (spectrum - target)[5:-5]
        return float(np.abs(difference - difference.mean()).mean())

    assert shape_error(after) < 0.5 * shape_error(before)
    assert match_spectrum(clip, target).shape == clip.shape


# ------------------------------------------------------------- issue #19: timing, alignment, bands
def _syllable_train(rng, seconds: float = 4.0) -> np.ndarray:
    """Syllables of random length and loudness with pauses, so the envelope has one clear
    best alignment with itself (no periodic ambiguity)."""
    parts = [_silence(0.4, rng)]
    while sum(p.size for p in parts) < seconds * RATE:
        parts.append(_voiced(rng.uniform(0.08, 0.3), rng) * rng.uniform(0.3, 1.0))
        parts.append(_silence(rng.uniform(0.04, 0.25), rng))
    parts.append(_silence(0.5, rng))
    return np.concatenate(parts).astype(np.float32)


def _aperture_following(audio: np.ndarray, shift_s: float) -> np.ndarray:
    """A 30 fps 'mouth' that opens with the level of `audio` delayed by shift_s (early if < 0)."""
    n_frames = int(audio.size / RATE * FPS)
    if shift_s >= 0:
        moved = np.concatenate([np.zeros(int(shift_s * RATE), np.float32), audio])[:audio.size]
    else:
        moved = np.concatenate([audio[int(-shift_s * RATE):], np.zeros(int(-shift_s * RATE), np.float32)])
    levels = frame_levels_db(moved, n_frames)
    return np.clip((levels + 60.0) / 40.0, 0, 1) * 20.0  # 0 mm in silence, 20 mm on loud vowels


@pytest.mark.parametrize("shift_ms", [-120, -40, 0, 60, 150])
def test_lag_finds_a_known_offset_between_mouth_and_sound(shift_ms):
    from tools.real_speech.sync import audio_motion_lag

    audio = _syllable_train(np.random.default_rng(7))
    lag = audio_motion_lag(_aperture_following(audio, shift_ms / 1000), audio, fps=FPS)
    assert lag is not None and lag.correlation > 0.8
    assert lag.lag_ms == pytest.approx(shift_ms, abs=12)  # 30 fps motion, 10 ms grid + parabola


def test_lag_is_not_measured_on_a_too_short_or_frozen_clip():
    from tools.real_speech.sync import audio_motion_lag

    audio = _syllable_train(np.random.default_rng(1))
    assert audio_motion_lag(np.zeros(10), audio[: RATE // 3], fps=FPS) is None
    assert audio_motion_lag(np.full(int(audio.size / RATE * FPS), 5.0), audio, fps=FPS) is None


def test_rest_after_speech_times_the_closing_after_each_pause(speech_clip):
    from tools.real_speech.sync import rest_after_speech

    audio, n_frames, times, in_speech = speech_clip  # speech 0.6-1.66 s, then 0.8 s of silence
    prompt = np.where(in_speech, 15.0, 0.5)
    late = np.where((times >= 0.6) & (times < 1.66 + 0.3), 15.0, 0.5)
    assert rest_after_speech(prompt, audio, rest_max_mm=3.34, fps=FPS) == [pytest.approx(0, abs=30)]
    assert rest_after_speech(late, audio, rest_max_mm=3.34, fps=FPS) == [pytest.approx(300, abs=40)]
    never = np.where(times >= 0.6, 15.0, 0.5)  # stays open to the end: the whole pause
    assert rest_after_speech(never, audio, rest_max_mm=3.34, fps=FPS)[0] > 700


def _peaked_curve(peak_ms: float) -> list[float]:
    shifts = np.arange(-20, 21) * 10.0
    return list(np.exp(-((shifts - peak_ms) / 60.0) ** 2))


def test_issue_targets_pool_bilabials_speech_ends_and_lag_curves():
    def stats(minima, releases, lag, frames=100):
        curve = [] if lag is None else _peaked_curve(lag)
        return checks.ClipStatistics(frames, 50, 20, 30, 0.5, 15.0, 0.9, minima, lag, 0.7, releases, curve)

    thresholds = checks.THRESHOLDS
    group = [stats([-2.0] * 9, [0.0, 50.0], 10.0, 300), stats([5.0], [300.0], -80.0), stats([], [], None)]
    targets = checks.issue_targets(group, thresholds)
    assert (targets["bilabials_closed"].passed_items, targets["bilabials_closed"].items) == (9, 10)
    assert targets["bilabials_closed"].passed  # 90 % meets ">= 90 %"
    assert (targets["rest_after_speech"].passed_items, targets["rest_after_speech"].items) == (2, 3)
    assert targets["rest_after_speech"].passed is False
    lag = targets["lag"]
    assert (lag.passed_items, lag.items) == (1, 2)  # clips whose own lag is within +-40 ms
    assert -40 < lag.value < 10 and lag.passed  # pooled, weighted to the longer in-sync clip
    late = checks.issue_targets([stats([], [], 90.0), stats([], [], 70.0)], thresholds)["lag"]
    assert late.value == pytest.approx(80, abs=10) and late.passed is False
    assert checks.issue_targets([stats([], [], None)], thresholds)["lag"].passed is None


needs_pocketsphinx = pytest.mark.skipif(
    not __import__("importlib").util.find_spec("pocketsphinx"),
    reason="needs the PyPI package pocketsphinx (tools/requirements.txt)")


@needs_pocketsphinx
def test_pocketsphinx_forced_alignment_times_the_bilabials_of_a_labelled_recording():
    from tools.real_speech.alignment import bilabial_error_ms, pocketsphinx_align
    from textalker_blender.core.audio import load_audio

    audio = load_audio(DATA_DIR / "arctic_a0009.wav")
    aligned = pocketsphinx_align(audio, "He turned sharply, and faced Gregson across the table.")
    truth = read_htk_phone_labels(DATA_DIR / "arctic_a0009_phone.lab")
    assert [p[0] for p in aligned if p[0] in checks.BILABIALS] == ["p", "b"]
    errors = bilabial_error_ms(aligned, truth)
    assert max(errors) < 30, errors  # measured 15 and 5 ms
    assert pocketsphinx_align(audio, "qwxzzy unknownword") is None  # not in the dictionary


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs the Debian package espeak-ng")
def test_espeak_dtw_alignment_finds_the_bilabials_within_the_window():
    from tools.real_speech.alignment import bilabial_error_ms, espeak_dtw_align
    from textalker_blender.core.audio import load_audio

    audio = load_audio(DATA_DIR / "arctic_a0009.wav")
    aligned = espeak_dtw_align(audio, "He turned sharply, and faced Gregson across the table.", "en")
    errors = bilabial_error_ms(aligned, read_htk_phone_labels(DATA_DIR / "arctic_a0009_phone.lab"))
    # the check's window reaches 100 ms before and 50 ms after the phone: errors must stay inside
    assert errors is not None and max(errors) < 90, errors


@pytest.mark.skipif(shutil.which("sox") is None, reason="needs the Debian package sox")
@pytest.mark.parametrize("codec", ["mu-law", "gsm"])
def test_telephone_version_is_band_limited_and_keeps_time(tmp_path, codec):
    import soundfile

    from tools.real_speech.telephone import band_energy_share, telephone_version

    source = DATA_DIR / "arctic_a0009.wav"
    original, rate = soundfile.read(str(source))
    path = telephone_version(source, tmp_path / "tel.wav", codec)
    phone, phone_rate = soundfile.read(str(path))
    assert phone_rate == 16000 and abs(phone.size - original.size) <= 160
    assert band_energy_share(original, rate, 3700, 8000) > 0.005  # the wideband clip has highs
    assert band_energy_share(phone, phone_rate, 3700, 8000) < 0.001
    assert band_energy_share(original, rate, 0, 200) > 0.05
    assert band_energy_share(phone, phone_rate, 0, 200) < 0.01
    n = min(phone.size, original.size)  # no time shift: envelopes line up at offset 0
    env_a = frame_levels_db(original[:n].astype(np.float32), 300, fps=100)
    env_b = frame_levels_db(phone[:n].astype(np.float32), 300, fps=100)
    shifts = range(-5, 6)
    best = max(shifts, key=lambda k: np.corrcoef(env_a[10 + k:290 + k], env_b[10:290])[0, 1])
    assert best == 0


def test_packaged_sources_list_only_installed_files_with_licence_and_language():
    from tools.real_speech.sources import DEBIAN_PACKAGES, packaged_clips

    clips, missing = packaged_clips()
    assert set(missing) <= set(DEBIAN_PACKAGES)
    for clip in clips:
        assert clip.original.is_file() and clip.licence and clip.package in DEBIAN_PACKAGES
        assert clip.language in {"en", "es", "fr", "it", "ru", "de"}
        assert clip.band in {"wideband", "telephone-native"}
    names = {c.name: c for c in clips}
    if "klettres_ru_ba" in names:
        assert names["klettres_ru_ba"].transcript == "ба"
    if "ps_librivox_0880" in names:
        assert names["ps_librivox_0880"].transcript == "he was not an ill disposed young man"


@pytest.mark.skipif(not Path("/usr/share/asterisk/sounds/es_MX_f_Allison/tt-weasels.g722").is_file(),
                    reason="needs the Debian package asterisk-core-sounds-es-g722")
def test_g722_prompt_decodes_to_wideband_speech(tmp_path):
    import soundfile

    from tools.real_speech.sources import packaged_clips, decode_to_wav
    from tools.real_speech.telephone import band_energy_share

    clip = {c.name: c for c in packaged_clips()[0]}["ast_es_tt-weasels"]
    audio, rate = soundfile.read(str(decode_to_wav(clip, tmp_path / "x.wav")))
    assert rate == 16000 and 2.0 < audio.size / rate < 5.0
    assert band_energy_share(audio, rate, 4000, 7000) > 0.001  # wideband: energy above telephone band


@needs_pocketsphinx
@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs the Debian package espeak-ng")
def test_cross_lingual_alignment_of_espeak_phones_times_the_bilabials():
    """The path used for non-English transcripts (espeak-ng's phones, PocketSphinx's English model),
    checked where labels exist: espeak's English phones on arctic_a0009."""
    from tools.real_speech.alignment import bilabial_error_ms, espeak_pocketsphinx_align, matched_phone_error_ms
    from textalker_blender.core.audio import load_audio

    audio = load_audio(DATA_DIR / "arctic_a0009.wav")
    truth = read_htk_phone_labels(DATA_DIR / "arctic_a0009_phone.lab")
    aligned = espeak_pocketsphinx_align(audio, "He turned sharply, and faced Gregson across the table.", "en")
    errors = bilabial_error_ms(aligned, truth)
    assert errors is not None and max(errors) < 30, errors  # measured 15 and 5 ms
    matched = matched_phone_error_ms(aligned, truth)
    assert matched["matched"] >= 0.7 * matched["of"] and matched["mean_ms"] < 40


def test_the_synthetic_reference_also_runs_the_model_over_the_phone_line(tiny_dataset):
    """The reference holds the model on test-A and on the same utterances through the dataset's
    telephone codecs, with the same phone timings, so the report can tell the telephone band's
    loss from the voice's."""
    from textalker_blender.core.pipeline import Pipeline
    from tools.real_speech.reference import build_reference
    from tools.synthetic_textalk4d import SyntheticTextalk4D

    pipeline = Pipeline.load(device="cpu")
    reference = build_reference(tiny_dataset, pipeline)
    wide, phone = SyntheticTextalk4D(tiny_dataset, "test-A"), SyntheticTextalk4D(tiny_dataset, "test-A-phone")
    assert len(phone) == len(wide) >= 1
    assert len(reference.model_phone) == len(reference.model) == len(wide)
    for clean, over_phone in zip(reference.model, reference.model_phone):
        assert len(clean.bilabial_minima_mm) == len(over_phone.bilabial_minima_mm)  # same timings
    without_model = build_reference(tiny_dataset, None)
    assert without_model.model_phone == [] and without_model.model == []
