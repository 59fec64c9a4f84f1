"""Robustness, part 3: long and heavy input (issue #8).

The add-on streams (`api.run`: chunks decoded, their wrinkle maps written to EXR files as they
come, only half-float offsets kept until the shape keys are written), so memory grows only by
what Blender itself must hold. It still checks before any work, from the file header, that the
clip is at most MAX_AUDIO_SECONDS (10 min: an hour of one shape key per frame would not fit in
Blender), that the run fits in the memory left, and that the EXR sequence fits on the disk. A
1-hour file is refused in about a second with the disk and memory it would need; a 10-minute file
runs end to end (Blender, shape keys, EXR files) with a peak under 4 GB (a subprocess running
tools/measure_long_audio.py; about 5 minutes of one CPU core, marked slow but run by default).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile
from robustness_support import files_under, needs_assets, registered_scene, snapshot, template_head, unregister_addon

from textalker_blender.core import resources
from textalker_blender.core.audio import audio_duration
from textalker_blender.core.errors import ResourceError
from textalker_blender.core.pipeline import MAX_AUDIO_SECONDS

REPO_ROOT = Path(__file__).resolve().parents[1]


def _long_silent_wav(path: Path, seconds: float, rate: int = 8000) -> Path:
    """A real WAV of `seconds` (8-bit 8 kHz keeps an hour at 29 MB), written in blocks."""
    with soundfile.SoundFile(str(path), "w", samplerate=rate, channels=1, subtype="PCM_U8") as handle:
        block = np.zeros(rate * 60, np.float32)
        remaining = int(seconds * rate)
        while remaining > 0:
            handle.write(block[: min(remaining, block.size)])
            remaining -= block.size
    return path


def test_estimate_bounds_the_arrays_of_a_real_run():
    from textalker_blender.core.frame_store import FrameStore
    from textalker_blender.core.pipeline import Pipeline

    pipeline = Pipeline.load(device="cpu")
    audio = (np.random.default_rng(0).normal(0, 0.1, 16000).astype(np.float32), 16000)
    result = pipeline.generate(audio, fps=60.0, steps=1)
    n_points = result.offsets.shape[1]
    whole = resources.estimate_run(1.0, 60.0, n_points, pipeline.wrinkle_resolution, whole_clip=True)
    assert whole.n_frames == result.n_frames == 60
    assert result.offsets.nbytes + result.wrinkle_maps.nbytes <= whole.memory_bytes - resources.WORKING_BYTES
    # Streamed: what waits for Blender is a FrameStore of the stream's moving points.
    stream = pipeline.generate_chunks(audio, fps=60.0, steps=1)
    store = FrameStore(stream.n_frames, stream.n_points, stream.movable)
    with stream:
        for chunk in stream:
            store.put(chunk.start, chunk.offsets)
    streamed = resources.estimate_run(1.0, 60.0, n_points, pipeline.wrinkle_resolution)
    assert store.nbytes <= streamed.memory_bytes - resources.WORKING_BYTES < whole.memory_bytes


def test_ten_minutes_at_30_fps_needs_a_bounded_few_gigabytes():
    estimate = resources.estimate_run(600.0, 30.0, 4418, 128, shape_key_vertices=4418)
    assert estimate.n_frames == 18000
    keys = 18000 * 4418 * 3 * 4  # what Blender holds: 0.95 GB
    assert keys < estimate.memory_bytes < 3 * 1024**3  # streamed: keys + half floats + working set
    whole = resources.estimate_run(600.0, 30.0, 4418, 128, shape_key_vertices=4418, whole_clip=True)
    assert whole.memory_bytes > estimate.memory_bytes + 2 * 1024**3  # every map in memory
    assert 1 * 1024**3 < estimate.disk_bytes < 2 * 1024**3
    assert "10.0 min = 18000 frames" in estimate.describe()


def test_memory_check_refuses_what_does_not_fit():
    estimate = resources.estimate_run(600.0, 60.0, 4418, 128, shape_key_vertices=4418)
    with pytest.raises(ResourceError, match="Not enough memory.*Split the audio"):
        resources.check_memory(estimate, available=4 * 1024**3)
    resources.check_memory(estimate, available=64 * 1024**3)
    if sys.platform.startswith("linux"):  # MemAvailable is read from /proc/meminfo
        assert 0 < resources.available_memory_bytes() < 1024**5


def test_disk_check_uses_the_nearest_existing_folder(tmp_path):
    folder = tmp_path / "not" / "yet" / "made"
    assert resources.existing_ancestor(folder) == tmp_path
    assert resources.free_disk_bytes(folder) > 0
    with pytest.raises(ResourceError, match="Not enough disk space.*1.0 GB"):
        resources.check_disk_space(folder, 1024**3, free=512 * 1024**2)
    resources.check_disk_space(folder, 1024**2, free=1024**3)
    assert not (tmp_path / "not").exists()  # checking made no folder


def test_write_check_survives_another_run_making_the_same_new_folder(tmp_path, monkeypatch):
    """Two batch runs probing one new --output-folder: the other run makes the folder between
    our existence check and our mkdir. That is not a permission problem."""
    target = tmp_path / "shared maps"
    real_mkdir = Path.mkdir

    def other_run_was_first(path, *arguments, **keywords):
        if path == target and not path.exists():
            real_mkdir(path)  # the other run
        return real_mkdir(path, *arguments, **keywords)

    monkeypatch.setattr(Path, "mkdir", other_run_was_first)
    resources.check_writable(target)
    assert target.is_dir()  # the other run's folder is left for it


def test_write_check_survives_another_run_removing_its_probe_folder(tmp_path, monkeypatch):
    """The other run made the folder, and removes it again (its own probe done) just before our
    probe file is created: we try again instead of failing."""
    target = tmp_path / "shared maps"
    real_temporary_file = resources.tempfile.NamedTemporaryFile
    removals = []

    def other_run_cleans_up(*arguments, **keywords):
        if not removals:
            removals.append(target)
            target.rmdir()
        return real_temporary_file(*arguments, **keywords)

    monkeypatch.setattr(resources.tempfile, "NamedTemporaryFile", other_run_cleans_up)
    resources.check_writable(target)
    assert removals and not target.exists()


def test_write_check_reports_a_file_in_the_way(tmp_path):
    blocker = tmp_path / "maps"
    blocker.write_text("not a folder")
    with pytest.raises(ResourceError, match="Cannot write the wrinkle maps to .*maps"):
        resources.check_writable(blocker / "run")


def test_one_hour_file_is_refused_by_the_pipeline_without_decoding(tmp_path):
    from textalker_blender.core.errors import AudioError
    from textalker_blender.core.pipeline import Pipeline

    hour = _long_silent_wav(tmp_path / "hour.wav", 3600.0)
    assert audio_duration(hour) == pytest.approx(3600.0)
    pipeline = Pipeline.load(device="cpu")
    started = time.perf_counter()
    with pytest.raises(AudioError, match="60.0 minutes long; the limit is 10.0 minutes"):
        pipeline.generate(str(hour), steps=1)
    assert time.perf_counter() - started < 2.0


@pytest.mark.blender
@needs_assets
def test_one_hour_file_is_refused_before_any_work_with_the_disk_it_would_need(tmp_path):
    from blender_support import bpy

    from textalker_blender.blender import api

    hour = _long_silent_wav(tmp_path / "hour.wav", 3600.0)
    registered_scene()
    try:
        bpy.ops.wm.save_as_mainfile(filepath=str(tmp_path / "scene.blend"))
        head = template_head()
        before = snapshot()
        started = time.perf_counter()
        with pytest.raises(ResourceError) as raised:
            api.generate(head, str(hour), steps=1)
        assert time.perf_counter() - started < 3.0  # from the header: nothing decoded
        message = str(raised.value)
        assert "60.0 minutes long; the limit is 10 minutes" in message
        assert "108000 frames" in message and "GB of disk for the wrinkle maps" in message
        assert snapshot() == before
        assert files_under(tmp_path / "textalker") == []
    finally:
        unregister_addon()


@pytest.mark.blender
@needs_assets
def test_clip_too_big_for_free_memory_is_refused_before_any_work(tmp_path, monkeypatch):
    from blender_support import bpy

    from textalker_blender.blender import api, generation

    five_minutes = _long_silent_wav(tmp_path / "five.wav", 300.0)
    monkeypatch.setattr(resources, "available_memory_bytes", lambda: 2 * 1024**3)
    monkeypatch.setattr(generation, "compute", lambda *a, **k: pytest.fail("the model ran"))
    registered_scene()
    try:
        bpy.ops.wm.save_as_mainfile(filepath=str(tmp_path / "scene.blend"))
        head = template_head()
        before = snapshot()
        with pytest.raises(ResourceError, match="Not enough memory: the audio is 5.0 min = 9000 frames"):
            api.generate(head, str(five_minutes), steps=1)
        assert snapshot() == before
    finally:
        unregister_addon()


@pytest.mark.slow
@needs_assets
def test_ten_minute_file_completes_within_the_memory_estimate(tmp_path):
    """The whole 10-minute clip through the add-on's streamed path (bpy: template head, 18,000
    shape keys, 18,000 EXR files) in a subprocess: its peak resident memory (ru_maxrss, Blender
    and the model included) stays under 4 GB, and its growth within the pre-check's estimate.
    About 5 minutes of one CPU core."""
    available = resources.available_memory_bytes()
    if available is not None and available < 5 * 1024**3:
        pytest.skip(f"needs ~5 GB of free memory, {resources.format_bytes(available)} free")
    report_path = tmp_path / "report.json"
    completed = subprocess.run(
        [sys.executable, str(REPO_ROOT / "tools" / "measure_long_audio.py"), "--seconds",
         str(MAX_AUDIO_SECONDS), "--fps", "30", "--steps", "1", "--threads", "1", "--json", str(report_path)],
        capture_output=True, text=True, timeout=3600, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    report = json.loads(report_path.read_text().splitlines()[-1])
    assert report["frames"] == report["shape_keys"] == report["exr_files"] == 18000
    assert report["peak_rss_bytes"] < 4 * 1024**3, report
    grown = report["peak_rss_bytes"] - report["rss_before_bytes"]
    assert grown <= report["estimate_bytes"], report
    # Bounded: the peak is what Blender holds (the keys) plus a constant, not the frames' maps.
    assert grown < report["shape_key_bytes"] + 1.5 * 1024**3, report
