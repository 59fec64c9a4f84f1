"""Robustness, part 1: bad audio (issue #8).

Each case is a real file made in a temporary folder (soundfile for WAV/FLAC/OGG, ffmpeg for MP3;
"corrupt" = truncated bytes or overwritten bytes). The loader must give a clear AudioError or a
correct result; through the add-on (real bpy scenes) an error must leave the scene unchanged and
write no file. Property-based tests (hypothesis) drive the loader and the audio features with
random lengths, rates, channel counts and amplitudes.
"""

from __future__ import annotations

import math
import shutil

import numpy as np
import pytest
import soundfile
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from robustness_support import (
    encode_mp3,
    files_under,
    needs_assets,
    registered_scene,
    snapshot,
    speech,
    template_head,
    unregister_addon,
    write_audio,
)

from textalker_blender.core.audio import PEAK_LIMIT, TARGET_RMS_DBFS, audio_duration, gated_rms_dbfs, load_audio
from textalker_blender.core.config import SAMPLE_RATE
from textalker_blender.core.errors import AudioError, TexTalkerError


def _duration(samples: np.ndarray) -> float:
    return samples.size / SAMPLE_RATE


# --------------------------------------------------------------------------------------------
# The loader (core, no Blender)


def test_not_an_audio_file_is_refused_with_a_clear_message(tmp_path):
    text = tmp_path / "speech.wav"
    text.write_text("Hello, this is a text file renamed to .wav\n" * 40)
    image = tmp_path / "speech.mp3"
    image.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 20)
    for path in (text, image):
        with pytest.raises(AudioError, match="not an audio file, or it is truncated or corrupt"):
            load_audio(path)


@pytest.mark.parametrize("suffix", ["wav", "flac", "mp3"])
def test_truncated_file_gives_the_part_that_is_there(tmp_path, suffix):
    wav = write_audio(tmp_path / "full.wav", seconds=2.0, rate=44100)
    full = wav if suffix == "wav" else (
        write_audio(tmp_path / "full.flac", 2.0, 44100) if suffix == "flac" else encode_mp3(wav, tmp_path / "full.mp3")
    )
    data = full.read_bytes()
    half = tmp_path / f"half.{suffix}"
    half.write_bytes(data[: len(data) // 2])
    samples = load_audio(half)
    assert samples.dtype == np.float32 and np.all(np.isfinite(samples))
    # About half of the 2 s are decodable (compressed formats lose their last frames).
    assert 0.7 <= _duration(samples) <= 1.2
    assert gated_rms_dbfs(samples) == pytest.approx(TARGET_RMS_DBFS, abs=1.0)


@pytest.mark.parametrize("suffix", ["wav", "flac", "mp3", "ogg"])
def test_file_cut_inside_its_header_is_refused(tmp_path, suffix):
    wav = write_audio(tmp_path / "full.wav", seconds=1.0, rate=22050)
    full = encode_mp3(wav, tmp_path / "full.mp3") if suffix == "mp3" else (
        wav if suffix == "wav" else write_audio(tmp_path / f"full.{suffix}", 1.0, 22050)
    )
    cut = tmp_path / f"cut.{suffix}"
    cut.write_bytes(full.read_bytes()[:20])
    with pytest.raises(AudioError, match="truncated or corrupt"):
        load_audio(cut)


def test_truncated_ogg_without_a_complete_page_is_refused_not_nan(tmp_path):
    """Regression: a (0, 1) array used to be taken for (channels, samples) and averaged to NaN."""
    full = write_audio(tmp_path / "full.ogg", seconds=2.0, rate=44100)
    half = tmp_path / "half.ogg"
    half.write_bytes(full.read_bytes()[: len(full.read_bytes()) // 2])
    try:
        samples = load_audio(half)
    except AudioError as error:
        assert "invalid samples" not in str(error)  # not the misleading NaN message
        assert "truncated or corrupt" in str(error)
    else:
        assert samples.size > 0 and np.all(np.isfinite(samples))


@pytest.mark.parametrize("suffix", ["wav", "flac", "mp3"])
def test_overwritten_bytes_in_the_middle_decode_to_finite_audio(tmp_path, suffix):
    wav = write_audio(tmp_path / "full.wav", seconds=2.0, rate=44100)
    full = {"wav": wav, "flac": None, "mp3": None}[suffix]
    if suffix == "flac":
        full = write_audio(tmp_path / "full.flac", 2.0, 44100)
    elif suffix == "mp3":
        full = encode_mp3(wav, tmp_path / "full.mp3")
    data = bytearray(full.read_bytes())
    start = len(data) // 3
    data[start:start + 2000] = np.random.default_rng(0).integers(0, 256, 2000, dtype=np.uint8).tobytes()
    corrupt = tmp_path / f"corrupt.{suffix}"
    corrupt.write_bytes(bytes(data))
    try:
        samples = load_audio(corrupt)
    except AudioError as error:  # a decoder may give up: then it says so
        assert "truncated or corrupt" in str(error)
        return
    assert np.all(np.isfinite(samples)) and np.abs(samples).max() <= PEAK_LIMIT + 1e-6
    assert 1.0 <= _duration(samples) <= 2.01


def test_zero_length_file_and_header_only_file(tmp_path):
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    with pytest.raises(AudioError, match="empty"):
        load_audio(empty)
    header_only = tmp_path / "header_only.wav"
    soundfile.write(str(header_only), np.zeros((0, 2), np.float32), 48000)
    with pytest.raises(AudioError, match="no audio samples"):
        load_audio(header_only)


def test_pure_silence_is_kept_silent_not_amplified(tmp_path):
    path = tmp_path / "silence.wav"
    soundfile.write(str(path), np.zeros(48000, np.float32), 48000, subtype="PCM_16")
    samples = load_audio(path)
    assert samples.size == SAMPLE_RATE and not np.any(samples)
    hiss = tmp_path / "hiss.flac"
    soundfile.write(str(hiss), np.random.default_rng(1).normal(0, 1e-4, 48000).astype(np.float32), 48000)
    quiet = load_audio(hiss)
    assert np.abs(quiet).max() < 1e-3  # noise below the floor is not pumped up to speech level


def test_clipped_audio_is_limited_below_full_scale(tmp_path):
    clipped = np.clip(speech(1.0, 44100) * 40.0, -1.0, 1.0)  # hard-clipped at full scale
    path = tmp_path / "clipped.wav"
    soundfile.write(str(path), clipped, 44100, subtype="PCM_16")
    samples = load_audio(path)
    assert np.abs(samples).max() <= PEAK_LIMIT + 1e-6
    assert gated_rms_dbfs(samples) == pytest.approx(TARGET_RMS_DBFS, abs=1.0)  # brought down to speech level
    over_range = tmp_path / "over.wav"  # float WAV can hold samples beyond +-1
    soundfile.write(str(over_range), clipped * 3.0, 44100, subtype="FLOAT")
    assert np.abs(load_audio(over_range)).max() <= PEAK_LIMIT + 1e-6


@pytest.mark.parametrize("rate", [8000, 96000])
def test_low_and_high_sample_rates_keep_duration_and_pitch(tmp_path, rate):
    t = np.arange(int(1.5 * rate)) / rate
    tone = (0.3 * np.sin(2 * np.pi * 440.0 * t)).astype(np.float32)
    path = tmp_path / f"tone_{rate}.wav"
    soundfile.write(str(path), tone, rate)
    samples = load_audio(path)
    assert _duration(samples) == pytest.approx(1.5, abs=1e-3)
    spectrum = np.abs(np.fft.rfft(samples))
    peak_hz = np.argmax(spectrum) * SAMPLE_RATE / samples.size
    assert peak_hz == pytest.approx(440.0, abs=2.0)


@pytest.mark.parametrize("channels", [2, 6])
def test_stereo_and_six_channel_files_are_mixed_to_mono(tmp_path, channels):
    path = write_audio(tmp_path / f"ch{channels}.wav", seconds=1.0, rate=48000, channels=channels)
    samples = load_audio(path, normalize=False)
    reference = load_audio((speech(1.0, 48000).astype(np.float32), 48000), normalize=False)
    gain = np.mean([0.5 + 0.1 * c for c in range(channels)])
    assert samples.shape == reference.shape
    np.testing.assert_allclose(samples, reference * gain, atol=2e-3)


def test_six_channel_file_shorter_than_its_channel_count(tmp_path):
    """Decoded files are (samples, channels): 3 samples of 6 channels is not 6 samples of 3."""
    path = tmp_path / "tiny_6ch.wav"
    soundfile.write(str(path), np.full((3, 6), 0.25, np.float32), 16000)
    samples = load_audio(path, normalize=False)
    assert samples.shape == (3,)
    np.testing.assert_allclose(samples, 0.25)


def test_path_with_spaces_and_non_ascii_characters(tmp_path):
    folder = tmp_path / "Prise de son – été 2025" / "日本語 のフォルダ"
    for name in ("voix d'Éloïse.wav", "Ünïcødé speech.flac", "говорит.ogg"):
        path = write_audio(folder / name, seconds=0.5, rate=22050)
        assert audio_duration(path) == pytest.approx(0.5, abs=1e-3)
        assert _duration(load_audio(path)) == pytest.approx(0.5, abs=1e-3)
    mp3 = encode_mp3(folder / "voix d'Éloïse.wav", folder / "chanson née.mp3")
    assert _duration(load_audio(mp3)) == pytest.approx(0.5, abs=0.06)  # MP3 pads a few ms


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(AudioError, match="not found"):
        load_audio(tmp_path / "nowhere" / "speech.wav")
    with pytest.raises(AudioError, match="folder"):
        load_audio(tmp_path)


def test_too_long_file_is_refused_from_its_header_before_decoding(tmp_path, monkeypatch):
    path = write_audio(tmp_path / "long.wav", seconds=3.0, rate=16000)
    import textalker_blender.core.audio as audio_module

    def no_decoding(*args, **kwargs):
        raise AssertionError("the file was decoded although its header says it is too long")

    monkeypatch.setattr(audio_module, "_read_file", no_decoding)
    with pytest.raises(AudioError, match="minutes long"):
        load_audio(path, max_duration_s=2.0)


# --------------------------------------------------------------------------------------------
# Property-based: random lengths, rates, channels and amplitudes

# derandomize: the same examples on every run, so CI is reproducible (raise max_examples and drop
# derandomize locally to explore further; 400 random examples passed when this was written).
RATES = st.sampled_from([4000, 8000, 11025, 16000, 22050, 44100, 48000, 96000]) | st.integers(1000, 200_000)


@settings(max_examples=40, deadline=None, database=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(
    n_samples=st.integers(1, 40_000),
    rate=RATES,
    channels=st.integers(1, 8),
    amplitude=st.floats(0.0, 1e4, allow_nan=False),
    seed=st.integers(0, 2**16),
)
def test_loader_property_any_length_rate_channels_amplitude(n_samples, rate, channels, amplitude, seed):
    # Arrays are (samples, channels) or (channels, samples), told apart by the shorter axis
    # (core.audio's contract), so only unambiguous shapes have one right answer.
    assume(n_samples > channels)
    noise = np.random.default_rng(seed).normal(0.0, 1.0, (n_samples, channels)).astype(np.float32)
    source = (noise * np.float32(amplitude), rate)
    expected = n_samples * SAMPLE_RATE / rate
    if expected < 2:  # resampling may leave no sample at all: a clear refusal, not a crash
        try:
            samples = load_audio(source)
        except AudioError as error:
            assert "too short" in str(error)
            return
    samples = load_audio(source)
    assert samples.dtype == np.float32 and samples.ndim == 1
    assert np.all(np.isfinite(samples))
    assert abs(samples.size - expected) <= 1.0 + 1e-9 * expected
    assert np.abs(samples).max() <= PEAK_LIMIT + 1e-6
    if amplitude == 0.0:
        assert not np.any(samples)


@settings(max_examples=25, deadline=None, database=None, derandomize=True)
@given(
    n_samples=st.integers(1, 3000),
    rate=st.sampled_from([8000, 16000, 44100]),
    amplitude=st.floats(0.0, 2.0),
)
def test_loader_property_on_real_wav_files(tmp_path_factory, n_samples, rate, amplitude):
    path = tmp_path_factory.mktemp("prop") / "clip.wav"
    values = np.clip(np.sin(np.arange(n_samples) * 0.05) * amplitude, -1, 1).astype(np.float32)
    soundfile.write(str(path), values, rate, subtype="PCM_16")
    assert audio_duration(path) == pytest.approx(n_samples / rate)
    if n_samples * SAMPLE_RATE / rate < 2:
        try:
            load_audio(path)
        except AudioError as error:
            assert "too short" in str(error)
        return
    samples = load_audio(path)
    assert abs(samples.size - n_samples * SAMPLE_RATE / rate) <= 1.0
    assert np.all(np.isfinite(samples)) and np.abs(samples).max() <= PEAK_LIMIT + 1e-6


_ENCODER = {}


def _bundled_encoder():
    if "encoder" not in _ENCODER:
        from core_helpers import tiny_config

        from textalker_blender.core.features import BundledAudioEncoder

        _ENCODER["encoder"] = BundledAudioEncoder(tiny_config()).eval()
    return _ENCODER["encoder"]


@settings(max_examples=30, deadline=None, database=None, derandomize=True)
@given(
    n_samples=st.integers(1, 48_000),
    amplitude=st.floats(0.0, 1.0),
    n_frames=st.integers(1, 120),
)
def test_features_property_finite_with_the_requested_frame_count(n_samples, amplitude, n_frames):
    import torch

    torch.set_num_threads(1)
    audio = (np.random.default_rng(n_samples).uniform(-1, 1, n_samples) * amplitude).astype(np.float32)
    with torch.inference_mode():
        features = _bundled_encoder().encode(audio, n_frames)
    assert tuple(features.shape) == (n_frames, _bundled_encoder().feature_dim)
    assert torch.isfinite(features).all()


# --------------------------------------------------------------------------------------------
# Through the add-on: the scene is unchanged on every error


@pytest.fixture(scope="module")
def addon_scene():
    pytest.importorskip("bpy")
    yield
    unregister_addon()


def _head_scene(tmp_path):
    from blender_support import bpy

    scene = registered_scene()
    bpy.ops.wm.save_as_mainfile(filepath=str(tmp_path / "scene.blend"))
    return scene, template_head()


def _bad_audio_file(case: str, folder):
    if case == "not audio":
        path = folder / "notes.wav"
        path.write_text("not audio\n" * 200)
    elif case == "zero length":
        path = folder / "empty.flac"
        path.write_bytes(b"")
    elif case == "header cut":
        path = folder / "cut.wav"
        path.write_bytes(write_audio(folder / "ok.wav").read_bytes()[:30])
    else:
        path = folder / "missing.wav"
    return path


@pytest.mark.blender
@needs_assets
@pytest.mark.parametrize("case", ["not audio", "zero length", "header cut", "missing"])
def test_bad_audio_file_leaves_the_scene_unchanged(tmp_path, addon_scene, case):
    from textalker_blender.blender import api

    _, head = _head_scene(tmp_path)
    path = _bad_audio_file(case, tmp_path)
    before = snapshot()
    with pytest.raises(TexTalkerError) as raised:
        api.generate(head, str(path), steps=1)
    message = str(raised.value)
    assert path.name in message and len(message) < 400  # says which file, reads as a sentence
    assert snapshot() == before
    assert files_under(tmp_path / "textalker") == []


@pytest.mark.blender
@needs_assets
def test_moved_sound_strip_file_leaves_the_scene_unchanged(tmp_path, addon_scene):
    from blender_support import bpy

    from textalker_blender.blender import api

    scene, head = _head_scene(tmp_path)
    path = write_audio(tmp_path / "takes" / "take 1.wav", seconds=1.0, rate=44100)
    strip = scene.sequence_editor_create().strips.new_sound("voice", str(path), 1, 1)
    shutil.move(str(path), str(tmp_path / "take 1 (moved).wav"))
    before = snapshot()
    assert api.blocking_reason(bpy.context) is None  # the strip still exists; its file does not
    with pytest.raises(TexTalkerError, match="sound of strip 'voice' is missing"):
        api.generate(head, strip, steps=1)
    with pytest.raises(RuntimeError, match="missing"):
        bpy.ops.textalker.generate()  # the operator reports the same message
    assert "missing" in bpy.context.window_manager.textalker_job.last_message
    assert snapshot() == before
    assert files_under(tmp_path / "textalker") == []


@pytest.mark.blender
@needs_assets
def test_silent_six_channel_96k_file_with_non_ascii_path_generates(tmp_path, addon_scene):
    """Correct results end to end: odd rate, many channels, odd path, pure silence."""
    from textalker_blender.blender import api, writers

    _, head = _head_scene(tmp_path)
    folder = tmp_path / "Aufnahmen – Ü 音声"
    folder.mkdir()
    speech_path = write_audio(folder / "six ch 96k.wav", seconds=0.5, rate=96000, channels=6)
    summary = api.generate(head, str(speech_path), steps=1)
    assert summary.n_frames == 15 and summary.exr_files == 15
    assert len(writers.generated_key_names(head)) == 15

    silence = folder / "stille.wav"
    soundfile.write(str(silence), np.zeros((48000 // 2, 2), np.float32), 48000)
    summary = api.generate(head, str(silence), steps=1)
    assert summary.n_frames == 15
    basis = np.empty(len(head.data.vertices) * 3, np.float32)
    head.data.shape_keys.key_blocks["Basis"].data.foreach_get("co", basis)
    moved = np.empty_like(basis)
    head.data.shape_keys.key_blocks[summary.shape_keys[7]].data.foreach_get("co", moved)
    assert np.all(np.isfinite(moved)) and np.abs(moved - basis).max() < 0.05  # a face, not a blow-up
    assert math.isfinite(summary.compute_s)


def test_damaged_stretch_inside_a_flac_becomes_silence_and_keeps_the_timing(tmp_path):
    """libsndfile alone (no ffmpeg, as inside Blender): a corrupted stretch in the middle of a FLAC
    is skipped with a fresh decoder and filled with silence, so the rest stays where the sound strip
    plays it; a file that breaks off ends at its last decodable block."""
    full = write_audio(tmp_path / "full.flac", seconds=3.0, rate=44100)
    data = bytearray(full.read_bytes())
    start = len(data) // 3
    data[start:start + 2000] = np.random.default_rng(1).integers(0, 256, 2000, dtype=np.uint8).tobytes()
    damaged = tmp_path / "damaged.flac"
    damaged.write_bytes(bytes(data))
    import soundfile

    with pytest.raises(Exception):  # the plain read gives up: the fallback is what is tested
        soundfile.read(str(damaged))
    samples = load_audio(damaged)
    assert _duration(samples) == pytest.approx(3.0, abs=0.05)
    frames = np.abs(samples).reshape(-1, 160).max(axis=1)  # 10 ms frames at 16 kHz
    silent = np.flatnonzero(frames < 1e-4)
    assert silent.size >= 5 and 0.25 < silent.mean() / len(frames) < 0.45  # where a third of the bytes are
    assert frames[-50:].max() > 0.05  # the last half second is still there
