"""core.audio.load_audio: formats, rates, channels, loudness and clear errors."""

import numpy as np
import pytest
import soundfile

from textalker_blender.core.audio import (
    PEAK_LIMIT,
    TARGET_RMS_DBFS,
    gated_rms_dbfs,
    load_audio,
)
from textalker_blender.core.errors import AudioError, TexTalkerError


def tone(freq, seconds, rate, amplitude=0.1):
    t = np.arange(int(seconds * rate)) / rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def dominant_frequency(samples, rate):
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(samples.size)))
    return np.fft.rfftfreq(samples.size, 1 / rate)[spectrum.argmax()]


@pytest.mark.parametrize("rate", [8000, 16000, 44100, 48000])
def test_file_at_any_rate_becomes_16k_with_same_pitch_and_duration(tmp_path, rate):
    path = tmp_path / f"tone_{rate}.wav"
    soundfile.write(path, tone(440.0, 1.5, rate), rate)
    audio = load_audio(path)
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert abs(audio.size - 1.5 * 16000) <= 2
    assert abs(dominant_frequency(audio, 16000) - 440.0) < 2.0


def test_stereo_file_is_mixed_to_mono(tmp_path):
    left = tone(300.0, 1.0, 44100)
    right = tone(700.0, 1.0, 44100)
    path = tmp_path / "stereo.flac"
    soundfile.write(path, np.stack([left, right], axis=1), 44100)
    audio = load_audio(path)
    assert audio.ndim == 1 and abs(audio.size - 16000) <= 2
    spectrum = np.abs(np.fft.rfft(audio))
    freqs = np.fft.rfftfreq(audio.size, 1 / 16000)
    peak = lambda f: spectrum[np.abs(freqs - f) < 5].max()  # noqa: E731
    # Both channels survive the mix at about the same level.
    assert peak(300) > 0.5 * peak(700) and peak(700) > 0.5 * peak(300)


def test_opposite_channels_cancel_to_silence_that_is_not_amplified(tmp_path):
    left = tone(300.0, 1.0, 16000)
    path = tmp_path / "cancel.wav"
    soundfile.write(path, np.stack([left, -left], axis=1), 16000, subtype="FLOAT")
    audio = load_audio(path)
    assert np.max(np.abs(audio)) < 1e-6


def test_array_input_channel_first_and_int16():
    samples = (tone(440.0, 1.0, 22050) * 32767).astype(np.int16)
    stereo_channel_first = np.stack([samples, samples])  # (2, N)
    audio = load_audio((stereo_channel_first, 22050))
    assert abs(audio.size - 16000) <= 2
    assert abs(dominant_frequency(audio, 16000) - 440.0) < 2.0


def test_quiet_speech_is_normalised_to_target_level():
    quiet = tone(200.0, 2.0, 16000, amplitude=0.003)
    audio = load_audio((quiet, 16000))
    assert gated_rms_dbfs(audio) == pytest.approx(TARGET_RMS_DBFS, abs=0.5)
    unnormalised = load_audio((quiet, 16000), normalize=False)
    np.testing.assert_allclose(unnormalised, quiet, atol=1e-7)


def test_loud_audio_is_limited_not_clipped():
    # Mostly quiet with one loud click: the gain for the speech level would clip the click.
    signal = tone(200.0, 2.0, 16000, amplitude=0.01)
    signal[1000] = 0.9
    audio = load_audio((signal, 16000))
    assert np.max(np.abs(audio)) <= PEAK_LIMIT + 1e-6
    assert np.max(np.abs(audio)) > 0.5


def test_silence_and_noise_floor_are_not_amplified():
    zeros = load_audio((np.zeros(16000, np.float32), 16000))
    assert zeros.shape == (16000,) and not np.any(zeros)
    hiss = np.random.default_rng(0).standard_normal(16000).astype(np.float32) * 10 ** (-75 / 20)
    out = load_audio((hiss, 16000))
    # Not amplified: only its DC and rumble below 20 Hz are removed (core/audio.py).
    assert np.std(out) == pytest.approx(np.std(hiss), rel=0.02)
    assert np.abs(out - hiss)[1600:-1600].max() < 0.2 * np.std(hiss)


def test_missing_file_has_clear_error(tmp_path):
    with pytest.raises(AudioError, match="not found"):
        load_audio(tmp_path / "nope.wav")


def test_not_audio_file_has_clear_error(tmp_path):
    path = tmp_path / "notes.wav"
    path.write_text("this is not audio at all\n" * 50)
    with pytest.raises(AudioError, match="Could not read"):
        load_audio(path)


def test_empty_inputs_raise_audio_error(tmp_path):
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    with pytest.raises(AudioError, match="empty"):
        load_audio(empty)
    with pytest.raises(AudioError, match="empty"):
        load_audio((np.zeros(0, np.float32), 16000))
    with pytest.raises(AudioError):
        load_audio(tmp_path)  # a folder


def test_bad_values_raise_audio_error():
    bad = np.ones(100, np.float32)
    bad[3] = np.nan
    with pytest.raises(AudioError, match="invalid"):
        load_audio((bad, 16000))
    with pytest.raises(AudioError, match="Sample rate"):
        load_audio((np.ones(100, np.float32), 0))
    with pytest.raises(AudioError, match="file path"):
        load_audio(12345)
    with pytest.raises(AudioError, match="minutes"):
        load_audio((np.zeros(16000 * 3, np.float32), 16000), max_duration_s=2.0)
    assert issubclass(AudioError, TexTalkerError)
