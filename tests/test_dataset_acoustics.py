"""Acoustic conditions of the synthetic dataset (#19): each effect changes the audio the way it
claims (measured on the output), speed changes keep the phoneme labels on their sounds, the draw
is seeded and the same condition gives the same bytes."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from tools.synthetic_textalk4d import acoustics  # noqa: E402
from tools.synthetic_textalk4d.acoustics import AcousticCondition, Noise, Reverb  # noqa: E402
from tools.synthetic_textalk4d.speech import SAMPLE_RATE, Phoneme  # noqa: E402

pytestmark = pytest.mark.skipif(shutil.which("flite") is None or shutil.which("sox") is None,
                                reason="needs the Debian packages flite and sox")
SENTENCE = "Maybe Bob bought a happy puppy at the market."


@pytest.fixture(scope="module")
def speech():
    """A flite sentence (clean audio and its phonemes) from the dataset's own voice plan."""
    from tools.synthetic_textalk4d.voice_plan import planned_voice
    from tools.synthetic_textalk4d.voices import synthesize
    return synthesize(SENTENCE, planned_voice(0, 1))


def _tiles(phonemes: list[Phoneme], duration: float) -> bool:
    return (phonemes[0].start == 0.0 and abs(phonemes[-1].end - duration) < 1e-9
            and all(abs(a.end - b.start) < 1e-9 and a.end > a.start
                    for a, b in zip(phonemes, phonemes[1:])))


def _envelope_db(audio: np.ndarray, hop: int = 80) -> np.ndarray:
    n = len(audio) // hop
    frames = audio[:n * hop].astype(np.float64).reshape(n, hop)
    return 10 * np.log10(np.mean(frames ** 2, axis=1) + 1e-10)


def _band_share_db(audio: np.ndarray, low_hz: float, high_hz: float) -> float:
    """Energy in [low, high) Hz relative to all energy, in dB."""
    spectrum = np.abs(np.fft.rfft(audio.astype(np.float64))) ** 2
    freqs = np.fft.rfftfreq(len(audio), 1 / SAMPLE_RATE)
    band = spectrum[(freqs >= low_hz) & (freqs < high_hz)].sum()
    return float(10 * np.log10(band / spectrum.sum() + 1e-20))


# --- speed: labels follow the sounds ----------------------------------------------------------
@pytest.mark.parametrize("speed", [0.9, 1.1])
def test_speed_change_scales_the_phoneme_timings_with_the_audio(speech, speed):
    audio, phonemes = speech
    out, moved = acoustics.apply(audio, phonemes, AcousticCondition(speed=speed))
    assert len(out) == int(round(len(audio) / speed))
    duration = len(out) / SAMPLE_RATE
    assert _tiles(moved, duration)
    assert [p.label for p in moved] == [p.label for p in phonemes]
    for before, after in zip(phonemes[1:-1], moved[1:-1]):
        assert after.start == pytest.approx(before.start / speed, abs=1e-6)
    # The loudness contour of the output is the original's on the scaled time axis: the best
    # lag between them is 0 (within a 5 ms frame), so every label still sits on its sound.
    hop = 80
    original = _envelope_db(audio, hop)
    stretched = np.interp(np.arange(len(out) // hop) * speed, np.arange(len(original)), original)
    result = _envelope_db(out, hop)
    n = min(len(result), len(stretched))
    lags = range(-10, 11)
    scores = [np.corrcoef(result[max(0, k):n + min(0, k)], stretched[max(0, -k):n - max(0, k)])[0, 1]
              for k in lags]
    assert abs(list(lags)[int(np.argmax(scores))]) <= 1
    # Pauses are still quiet and vowels loud under the moved labels.
    def level(labels):
        parts = [out[int(p.start * SAMPLE_RATE):int(p.end * SAMPLE_RATE)] for p in moved if p.label in labels]
        return 10 * np.log10(np.mean(np.concatenate(parts).astype(np.float64) ** 2) + 1e-12)
    assert level({"aa", "ae", "ah", "ao"}) > level({"pau"}) + 20


def test_weights_from_speed_changed_timings_match_the_new_length(speech):
    from tools.synthetic_textalk4d.motion import FPS, face_unit_weights
    from tools.synthetic_textalk4d.styles import SpeakingStyle
    audio, phonemes = speech
    out, moved = acoustics.apply(audio, phonemes, AcousticCondition(speed=0.9))
    style = SpeakingStyle.random(np.random.default_rng(0))
    weights = face_unit_weights(moved, SENTENCE, len(out) / SAMPLE_RATE, style, np.random.default_rng(0))
    assert weights.shape[0] == int(round(len(out) / SAMPLE_RATE * FPS))
    slow = face_unit_weights(phonemes, SENTENCE, len(audio) / SAMPLE_RATE, style, np.random.default_rng(0))
    assert weights.shape[0] > slow.shape[0]


def test_pitch_change_keeps_length_and_timings_and_moves_f0(speech):
    import librosa
    audio, phonemes = speech
    out, same = acoustics.apply(audio, phonemes, AcousticCondition(pitch_semitones=3.0))
    assert len(out) == len(audio) and same == phonemes

    def median_f0(x):
        f0, voiced, _ = librosa.pyin(x.astype(np.float64), fmin=60, fmax=500, sr=SAMPLE_RATE,
                                     frame_length=1024)
        return float(np.nanmedian(f0[voiced]))
    ratio = median_f0(out) / median_f0(audio)
    assert ratio == pytest.approx(2 ** (3 / 12), rel=0.04)


# --- each condition does what it says ---------------------------------------------------------
@pytest.mark.parametrize("codec", acoustics.TELEPHONE_CODECS)
def test_telephone_line_limits_the_band(speech, codec):
    speech_audio, phonemes = speech
    # A faint hiss gives the input energy above 4 kHz (flite's awb has little up there).
    hiss = 0.003 * np.random.default_rng(0).standard_normal(len(speech_audio))
    audio = (speech_audio + hiss).astype(np.float32)
    out, same = acoustics.apply(audio, phonemes, AcousticCondition(telephone=codec))
    assert len(out) == len(audio) and same == phonemes
    assert _band_share_db(audio, 4000, 8000) > -30          # the input has energy up there
    assert _band_share_db(out, 4000, 8000) < -60            # the phone line has none (measured < -70)
    assert _band_share_db(out, 300, 3400) > -0.5            # the speech band carries it all
    assert _band_share_db(out, 0, 200) < -25                # and little below it
    # Still the same speech: loudness contours agree.
    assert np.corrcoef(_envelope_db(out), _envelope_db(audio))[0, 1] > 0.85
    assert not np.allclose(out, audio, atol=1e-3)


@pytest.mark.parametrize("kind", acoustics.NOISE_KINDS)
def test_noise_is_added_at_the_drawn_snr(speech, kind):
    audio, phonemes = speech
    noise = Noise(kind=kind, snr_db=12.5, seed=7)
    out, _ = acoustics.apply(audio, phonemes, AcousticCondition(noise=noise))
    added = out.astype(np.float64) - audio
    snr = 10 * np.log10(np.mean(audio.astype(np.float64) ** 2) / np.mean(added ** 2))
    assert snr == pytest.approx(12.5, abs=0.05)
    # The colour is what it says: pink and brown put more of their power low than white does.
    low = _band_share_db(added, 0, 1000)
    if kind == "white":
        assert low == pytest.approx(10 * np.log10(1000 / 8000), abs=1.0)
    elif kind in ("pink", "brown"):
        assert low > -4
    # Another seed cuts other noise.
    other, _ = acoustics.apply(audio, phonemes, AcousticCondition(noise=Noise(kind, 12.5, 8)))
    assert not np.allclose(other, out)


def test_level_change_with_limiter(speech):
    audio, phonemes = speech
    quiet, _ = acoustics.apply(audio, phonemes, AcousticCondition(level_db=-20.0))
    np.testing.assert_allclose(quiet, audio * 10 ** (-20 / 20), rtol=1e-5, atol=1e-7)
    loud, _ = acoustics.apply(audio * 4, phonemes, AcousticCondition(level_db=6.0))
    assert np.abs(loud).max() <= acoustics.LIMITER_CEILING + 1e-6
    below = np.abs(audio * 4 * 10 ** (6 / 20)) <= acoustics.LIMITER_KNEE
    np.testing.assert_allclose(loud[below], (audio * 4 * 10 ** (6 / 20))[below], rtol=1e-5)
    assert np.all(np.diff(np.sort(acoustics.limit(np.linspace(0, 3, 500, dtype=np.float32)))) >= 0)


def test_dc_offset_and_clipping(speech):
    audio, phonemes = speech
    shifted, _ = acoustics.apply(audio, phonemes, AcousticCondition(dc_offset=0.03))
    assert float(np.mean(shifted) - np.mean(audio)) == pytest.approx(0.03, abs=1e-6)
    clipped, _ = acoustics.apply(audio, phonemes, AcousticCondition(clip_fraction=0.005))
    level = acoustics.clipping_level(audio, 0.005)
    assert np.abs(clipped).max() == pytest.approx(level)
    at_level = np.mean(np.abs(clipped) >= level - 1e-7)
    assert 0.004 <= at_level <= 0.007                    # the share of samples clipped
    unclipped = np.abs(audio) < level
    np.testing.assert_array_equal(clipped[unclipped], audio[unclipped])


def test_reverb_keeps_length_and_power_and_fills_the_pauses(speech):
    audio, phonemes = speech
    room = Reverb(reverberance=90.0, hf_damping=30.0, room_scale=100.0, pre_delay_ms=10.0)
    out, same = acoustics.apply(audio, phonemes, AcousticCondition(reverb=room))
    assert len(out) == len(audio) and same == phonemes
    assert np.mean(out.astype(np.float64) ** 2) == pytest.approx(np.mean(audio.astype(np.float64) ** 2), rel=0.01)
    # The room's tail rings into the pause after each word: the quietest frames get louder.
    assert np.percentile(_envelope_db(out), 20) > np.percentile(_envelope_db(audio), 20) + 6


# --- the draw ---------------------------------------------------------------------------------
def test_condition_draw_is_seeded_about_a_third_clean_and_covers_every_effect():
    def draws(seed):
        rng = np.random.default_rng(seed)
        return [acoustics.draw_condition(rng) for _ in range(3000)]
    first = draws(1)
    assert first == draws(1) and first != draws(2)
    clean = np.mean([c.clean for c in first])
    assert 0.3 < clean < 0.37
    effects = {name for c in first for name in c.effects()}
    assert effects == set(acoustics.EFFECT_PROBABILITY)
    assert {c.noise.kind for c in first if c.noise} == set(acoustics.NOISE_KINDS)
    assert {c.telephone for c in first if c.telephone} == set(acoustics.TELEPHONE_CODECS)
    for c in first:
        assert AcousticCondition.from_dict(c.to_dict()) == c
        if c.speed != 1.0:
            assert 0.9 <= c.speed <= 1.1
        assert abs(c.pitch_semitones) <= 3.0
        if c.noise:
            assert 5.0 <= c.noise.snr_db <= 30.0
        if c.level_db:
            assert -25.0 <= c.level_db <= 6.0
    combined = [c for c in first if len(c.effects()) >= 2]
    assert len(combined) > 500


def test_same_condition_same_bytes(speech):
    audio, phonemes = speech
    condition = AcousticCondition(speed=1.07, pitch_semitones=-2.0,
                                  reverb=Reverb(60.0, 50.0, 40.0, 5.0),
                                  noise=Noise("babble", 15.0, 3), telephone="gsm", level_db=-6.0,
                                  dc_offset=0.01, clip_fraction=0.002)
    first, timings = acoustics.apply(audio, phonemes, condition)
    second, again = acoustics.apply(audio, phonemes, condition)
    assert first.tobytes() == second.tobytes() and timings == again
    assert condition.effects() == list(acoustics.EFFECT_PROBABILITY)
