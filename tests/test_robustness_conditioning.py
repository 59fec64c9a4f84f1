"""Robustness, round 2 (issue #17): audio that decodes but is not clean speech.

A DC offset, hard clipping, speech at -60 dBFS, music and noise. The loader conditions the audio
(DC and rumble removed below the model's 20 Hz mel floor, quiet speech normalised like loud
speech) and reports what the user should know; the Pipeline carries the warnings on its result
and the add-on shows them (operator report, panel, batch CLI), while the run still goes ahead.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile
from robustness_support import needs_assets, speech

from textalker_blender.core.audio import (
    HIGH_PASS_HZ,
    TARGET_RMS_DBFS,
    gated_rms_dbfs,
    load_audio,
    load_audio_with_report,
)
from textalker_blender.core.config import SAMPLE_RATE

REAL_SPEECH = Path(__file__).resolve().parent / "data" / "real_speech"
SECONDS = 2.0


def _tone(seconds=SECONDS, frequency=440.0):
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    return (0.3 * np.sin(2 * np.pi * frequency * t)).astype(np.float32)


def _melody(seconds=SECONDS, note_s=0.25):
    """Plucked notes changing four times a second (a syllable-like rhythm, steady pitches)."""
    notes = [220, 277, 330, 440, 392, 349, 262, 294]
    n, seg = int(seconds * SAMPLE_RATE), int(note_s * SAMPLE_RATE)
    out = np.zeros(n, np.float32)
    for i in range(0, n, seg):
        k = np.arange(min(seg, n - i)) / SAMPLE_RATE
        frequency = notes[(i // seg) % len(notes)]
        out[i:i + len(k)] = sum(np.sin(2 * np.pi * frequency * h * k) / h for h in (1, 2, 3, 4)) * np.exp(-3 * k) * 0.2
    return out


def _chords(seconds=SECONDS):
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    return (0.1 * sum(np.sin(2 * np.pi * f * t) for f in (261.6, 329.6, 392.0))).astype(np.float32)


def _noise(seconds=SECONDS):
    return np.random.default_rng(0).normal(0, 0.05, int(seconds * SAMPLE_RATE)).astype(np.float32)


def _warnings(samples) -> list[str]:
    return load_audio_with_report((np.asarray(samples, np.float32), SAMPLE_RATE))[1].warnings


def test_dc_offset_is_removed_before_the_level_is_measured():
    clean = speech(SECONDS)
    with_offset = clean * 10 ** (-30 / 20) + 0.5  # quiet speech riding on a large offset
    conditioned = load_audio((with_offset, SAMPLE_RATE))
    assert abs(float(conditioned.mean())) < 1e-3
    assert gated_rms_dbfs(conditioned) == pytest.approx(TARGET_RMS_DBFS, abs=1.0)  # not turned down
    reference = load_audio((clean, SAMPLE_RATE))
    correlation = np.corrcoef(conditioned, reference)[0, 1]
    assert correlation > 0.99  # the same speech, offset gone
    dc_only = load_audio((np.full(int(SECONDS * SAMPLE_RATE), 0.3, np.float32), SAMPLE_RATE))
    assert np.abs(dc_only).max() < 1e-6  # a DC-only file is silence
    assert _warnings(np.full(32000, 0.3))[0].startswith("The audio is silent")


def test_clean_speech_is_left_as_it_was_above_the_models_mel_floor():
    """What the model hears of clean speech: its log-mel features (80 bands from 20 Hz) change
    by less than 0.05 nat in every band but the lowest (20-94 Hz, which holds the removed DC
    and rumble), and by a median below 0.2 nat there."""
    import librosa

    clean = speech(SECONDS)
    before = clean * (10 ** ((TARGET_RMS_DBFS - gated_rms_dbfs(clean)) / 20))  # the old loader's output
    after = load_audio((clean, SAMPLE_RATE))

    def log_mel(x):
        return np.log(librosa.feature.melspectrogram(y=x.astype(np.float32), sr=SAMPLE_RATE, n_fft=640, hop_length=160,
                                                     n_mels=80, fmin=HIGH_PASS_HZ, fmax=8000) + 1e-6)

    difference = np.abs(log_mel(after) - log_mel(before))
    assert np.percentile(difference[1:], 99) < 0.05
    assert np.median(difference[0]) < 0.2


def test_speech_at_minus_60_dbfs_is_raised_and_steady_hiss_is_not():
    quiet = speech(SECONDS)
    quiet = quiet / np.abs(quiet).max() * 10 ** (-60 / 20)  # peaks at -60 dBFS
    samples, report = load_audio_with_report((quiet, SAMPLE_RATE))
    assert gated_rms_dbfs(samples) == pytest.approx(TARGET_RMS_DBFS, abs=1.0)
    assert any("very quiet" in w for w in report.warnings)
    hiss = np.random.default_rng(1).normal(0, 1e-4, int(SECONDS * SAMPLE_RATE)).astype(np.float32)  # -80 dBFS
    assert np.abs(load_audio((hiss, SAMPLE_RATE))).max() < 1e-3


def test_clipping_is_reported_and_only_limited():
    clipped = np.clip(speech(SECONDS) * 40.0, -1.0, 1.0)
    samples, report = load_audio_with_report((clipped, SAMPLE_RATE))
    assert report.clipped_fraction > 0.1
    assert any("clipped" in w for w in report.warnings)
    assert np.abs(samples).max() <= 0.99 + 1e-6
    assert not any("clipped" in w for w in _warnings(speech(SECONDS)))


@pytest.mark.parametrize("make, reason", [
    (_noise, "no voice found"),
    (_tone, "like music or a tone"),
    (_melody, "like music or a tone"),
    (_chords, "like music or a tone"),
])
def test_noise_music_and_tones_are_reported_as_not_speech(make, reason):
    warnings = _warnings(make())
    assert any("does not sound like speech" in w and reason in w for w in warnings), warnings


@pytest.mark.parametrize("path", sorted(REAL_SPEECH.glob("*.wav")) + ["sample"], ids=lambda p: Path(str(p)).stem)
def test_real_voices_get_no_warning(path):
    if path == "sample":
        samples = speech(3.0)
        source = (samples, SAMPLE_RATE)
    else:
        source = str(path)
    assert load_audio_with_report(source)[1].warnings == []


# --------------------------------------------------------------------------------------------
# The face and the user see it


def _lip_motion(offsets, template) -> float:
    return float(np.abs(offsets[:, template.lip_mask]).mean())


@pytest.fixture(scope="module")
def pipeline():
    from textalker_blender.blender import catalog
    from textalker_blender.core.pipeline import Pipeline

    if not catalog.weights_path().is_file():
        pytest.skip("bundled weights not built")
    return Pipeline.load(device="cpu")


@needs_assets
def test_the_face_moves_the_same_with_an_offset_or_at_minus_60_dbfs(pipeline):
    clean = speech(SECONDS)
    options = {"steps": 2, "seed": 0}
    reference = pipeline.generate((clean, SAMPLE_RATE), **options)
    assert reference.warnings == []
    silence = _lip_motion(pipeline.generate((np.zeros_like(clean), SAMPLE_RATE), **options).offsets, pipeline.template)
    dc_only = pipeline.generate((np.full_like(clean, 0.3), SAMPLE_RATE), **options)
    assert _lip_motion(dc_only.offsets, pipeline.template) == pytest.approx(silence, rel=1e-3)
    moving = _lip_motion(reference.offsets, pipeline.template)
    offset = pipeline.generate((clean * 10 ** (-30 / 20) + 0.5, SAMPLE_RATE), **options)
    assert _lip_motion(offset.offsets, pipeline.template) == pytest.approx(moving, rel=0.1)
    quiet = pipeline.generate((clean / np.abs(clean).max() * 1e-3, SAMPLE_RATE), **options)
    assert _lip_motion(quiet.offsets, pipeline.template) == pytest.approx(moving, rel=0.1)
    assert any("very quiet" in w for w in quiet.warnings)


@needs_assets
def test_warnings_reach_the_summary_the_panel_and_the_batch_cli(tmp_path, capsys):
    bpy = pytest.importorskip("bpy")
    from robustness_support import registered_scene, template_head

    from textalker_blender.blender import api, cli, panel

    music = tmp_path / "music.wav"
    soundfile.write(str(music), _melody(1.0), SAMPLE_RATE)
    scene = registered_scene()
    head = template_head()
    summary = api.generate(head, str(music), steps=1)
    assert any("does not sound like speech" in w for w in summary.warnings)
    assert "Audio: The audio does not sound like speech" in summary.message

    settings = scene.textalker
    settings.audio_source = "FILE"
    settings.audio_file = str(music)
    settings.target = head
    settings.steps = 1
    assert bpy.ops.textalker.generate() == {"FINISHED"}
    job = bpy.context.window_manager.textalker_job
    assert "does not sound like speech" in job.last_warnings
    labels = []
    layout = SimpleNamespace(label=lambda text="", **kw: labels.append((text, kw.get("icon"))))
    layout.row = layout.column = layout.box = layout.split = lambda **kw: layout
    layout.prop = layout.prop_search = layout.operator = lambda *a, **kw: SimpleNamespace()
    layout.enabled, layout.scale_y, layout.active = True, 1.0, True
    panel.TEXTALKER_PT_main.draw(SimpleNamespace(layout=layout), bpy.context)
    assert any("does not sound like speech" in text and icon == "ERROR" for text, icon in labels)

    blend = tmp_path / "music.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(blend))
    assert cli.main(["--blend", str(blend), "--object", head.name, "--audio", str(music), "--steps", "1"]) == 0
    captured = capsys.readouterr()
    assert "TexTalker warning: The audio does not sound like speech" in captured.err
    assert '"warnings": [' in captured.out


@needs_assets
def test_core_cli_prints_the_warnings_and_still_writes_the_result(tmp_path):
    import subprocess
    import sys

    music = tmp_path / "music.wav"
    soundfile.write(str(music), _melody(1.0), SAMPLE_RATE)
    out = tmp_path / "music.npz"
    done = subprocess.run([sys.executable, "-m", "textalker_blender.core", str(music), "--out", str(out), "--steps", "1",
                           "--quiet"], cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr
    assert "warning: The audio does not sound like speech" in done.stderr
    assert out.is_file()
