"""Streamed generation (issue #7 item 4, issue #8 item 3): `Pipeline.generate_chunks`, the
compact `FrameStore`, the ARKit solve from projections, and the add-on's streamed path
(`api.run`, the modal job) with its guarantees: same numbers as the whole-clip path (to half
float precision where offsets wait as half floats), bounded working memory, files written as
they come, and the scene (and a previous run's output) untouched when a run fails part way.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
from robustness_support import files_under, needs_assets, speech

from textalker_blender.core import pipeline as pipeline_module
from textalker_blender.core.errors import Cancelled
from textalker_blender.core.frame_store import FrameStore

# Half floats keep 11 significant bits: offsets of a few centimetres to about 1e-5 m.
HALF_RTOL = 2.0**-11


def _clip(seconds: float):
    return (speech(seconds), 16000)


@pytest.fixture(scope="module")
def pipe():
    from textalker_blender.core.pipeline import Pipeline

    return Pipeline.load(device="cpu")


# --------------------------------------------------------------------------------------------
# Core: Pipeline.generate_chunks


@needs_assets
@pytest.mark.parametrize("fps", [30.0, 24.0, 60.0])
def test_streamed_chunks_are_exactly_the_whole_clip_at_any_chunk_size(pipe, fps):
    audio = _clip(1.2)
    whole = pipe.generate(audio, fps=fps, steps=1, seed=5)
    assert whole.n_frames == int(np.ceil(1.2 * fps - 1e-6))
    for chunk_frames in (1, 7, 256):
        stream = pipe.generate_chunks(audio, fps=fps, steps=1, seed=5, chunk_frames=chunk_frames)
        assert stream.n_frames == whole.n_frames and stream.map_shape == whole.wrinkle_maps.shape[1:]
        chunks = list(stream)
        assert [c.start for c in chunks] == list(range(0, whole.n_frames, chunk_frames))
        assert all(c.offsets.dtype == np.float32 and c.wrinkle_maps.dtype == np.float16 for c in chunks)
        np.testing.assert_array_equal(np.concatenate([c.offsets for c in chunks]), whole.offsets)
        np.testing.assert_array_equal(np.concatenate([c.wrinkle_maps for c in chunks]), whole.wrinkle_maps)


@needs_assets
def test_stream_keeps_at_most_one_chunk_and_one_batch_of_decoded_frames(pipe):
    chunk_frames = 20
    stream = pipe.generate_chunks(_clip(3.0), fps=24.0, steps=1, chunk_frames=chunk_frames)
    held = []
    for chunk in stream:
        held.append(len(stream._decoder.offsets))
        assert len(stream._decoder.offsets) == len(stream._decoder.ratio)
    # Model frames held: the chunk's span at 30 fps for 24 fps output, plus a decode batch.
    bound = int(np.ceil(chunk_frames * 30 / 24)) + 2 + pipeline_module.DECODE_BATCH
    assert max(held) <= bound, held
    assert len(held) == int(np.ceil(stream.n_frames / chunk_frames))


@needs_assets
def test_stream_says_which_points_move_and_the_others_are_exactly_zero(pipe):
    stream = pipe.generate_chunks(_clip(0.6), fps=30.0, steps=1)
    np.testing.assert_array_equal(stream.movable, pipe.template.motion_vertices)
    assert 0 < stream.movable.sum() < stream.n_points == pipe.template.n_vertices
    for chunk in stream:
        assert np.all(chunk.offsets[:, ~stream.movable] == 0.0)
        assert np.abs(chunk.offsets[:, stream.movable]).max() > 0.0


@needs_assets
def test_cancel_and_close_mid_stream_leave_the_pipeline_usable(pipe):
    cancel = threading.Event()
    stream = pipe.generate_chunks(_clip(1.0), fps=30.0, steps=1, chunk_frames=8, cancel=cancel)
    next(stream)
    cancel.set()
    with pytest.raises(Cancelled):
        next(stream)
    stream = pipe.generate_chunks(_clip(1.0), fps=30.0, steps=1, chunk_frames=8)
    with stream:
        next(stream)
    assert stream._decoder is None  # the decoded frames and latents are released
    with pytest.raises(StopIteration):
        next(stream)
    done = threading.Event()

    def other_thread():  # the Pipeline's lock is free again
        pipe.generate(_clip(0.2), steps=1)
        done.set()

    thread = threading.Thread(target=other_thread)
    thread.start()
    thread.join(120)
    assert done.is_set()


@needs_assets
def test_stream_progress_goes_forward_to_one_with_every_stage(pipe):
    seen = []
    stream = pipe.generate_chunks(_clip(1.0), fps=30.0, steps=1, chunk_frames=4,
                                  progress=lambda fraction, stage: seen.append((fraction, stage)))
    assert {stage for _, stage in seen} == {"audio", "features", "diffusion"}
    for _ in stream:
        pass
    fractions = [f for f, _ in seen]
    assert fractions == sorted(fractions) and fractions[-1] == pytest.approx(1.0)
    assert [s for _, s in seen][-2:] == ["decode", "resample"]


# --------------------------------------------------------------------------------------------
# Core: FrameStore


def test_frame_store_keeps_movable_points_as_half_floats():
    rng = np.random.default_rng(0)
    movable = rng.random(50) < 0.6
    offsets = rng.normal(0, 0.01, (23, 50, 3)).astype(np.float32)
    offsets[:, ~movable] = 0.0
    store = FrameStore(23, 50, movable)
    assert store.shape == (23, 50, 3) and len(store) == 23
    assert store.nbytes == 23 * movable.sum() * 3 * 2  # half the float32 size of the moving points
    store.put(10, offsets[10:])  # chunks in any order
    store.put(0, offsets[:10])
    back = store.frames()
    assert back.dtype == np.float32 and back.shape == offsets.shape
    np.testing.assert_allclose(back, offsets, rtol=HALF_RTOL, atol=1e-7)
    assert np.all(back[:, ~movable] == 0.0)
    blocks = list(store.blocks(8))
    assert [start for start, _ in blocks] == [0, 8, 16]
    np.testing.assert_array_equal(np.concatenate([b for _, b in blocks]), back)
    np.testing.assert_array_equal(np.asarray(store), back)
    with pytest.raises(ValueError, match="outside the store"):
        store.put(20, offsets[:5])
    with pytest.raises(ValueError, match=r"\(n, 50, 3\)"):
        store.put(0, offsets[:, :10])
    everything = FrameStore(4, 5)
    everything.put(0, np.ones((4, 5, 3), np.float32))
    assert everything.frames(1, 3).shape == (2, 5, 3) and np.all(everything.frames() == 1.0)


def test_frame_store_read_once_frees_its_blocks_as_it_goes(monkeypatch):
    from textalker_blender.core import frame_store

    monkeypatch.setattr(frame_store, "BLOCK_FRAMES", 4)
    offsets = np.random.default_rng(2).normal(0, 0.01, (10, 6, 3)).astype(np.float32)
    store = FrameStore(10, 6)
    store.put(0, offsets)
    full = store.nbytes
    assert full == 10 * 6 * 3 * 2
    store.release_after_reading = True
    sizes, frames = [], []
    for start, block in store.blocks(3):  # read blocks do not line up with stored blocks
        frames.append(block)
        sizes.append(store.nbytes)
    np.testing.assert_allclose(np.concatenate(frames), offsets, rtol=HALF_RTOL, atol=1e-7)
    # Stored blocks of 4 frames go once read past: after frames 0-5 the first, after 6-8 the
    # second, at the end the last.
    assert sizes == [full, full - 4 * 36, full - 8 * 36, 0]
    with pytest.raises(ValueError, match="released"):
        store.frames(0, 1)


# --------------------------------------------------------------------------------------------
# Core: the ARKit solve needs only per-frame projections


@needs_assets
def test_arkit_solve_from_chunked_projections_equals_the_whole_solve(pipe):
    from textalker_blender.core.arkit import template_solver

    template = pipe.template
    solver = template_solver(template)
    rng = np.random.default_rng(1)
    weights = np.clip(rng.normal(0.2, 0.2, (40, template.n_units)), 0, 1)
    offsets = np.einsum("tu,uvc->tvc", weights, template.unit_offsets).astype(np.float32)
    whole, report = solver.solve(offsets)
    parts = [solver.project(offsets[start:start + 7]) for start in range(0, 40, 7)]
    streamed, streamed_report = solver.solve_projected(
        np.concatenate([p for p, _ in parts]), np.concatenate([n for _, n in parts])
    )
    np.testing.assert_allclose(streamed, whole, atol=1e-5)
    assert streamed_report.iterations == report.iterations
    assert streamed_report.fit_rmse_m == pytest.approx(report.fit_rmse_m, rel=1e-4, abs=1e-9)


# --------------------------------------------------------------------------------------------
# Add-on: the streamed path


@pytest.fixture
def head(tmp_path):
    from robustness_support import registered_scene, template_head

    from blender_support import bpy

    registered_scene()
    bpy.ops.wm.save_as_mainfile(filepath=str(tmp_path / "scene.blend"))
    return template_head()


@pytest.fixture(scope="module", autouse=True)
def _unregister_at_end():
    yield
    from robustness_support import unregister_addon

    unregister_addon()


def _key_offsets(obj, names) -> np.ndarray:
    blocks = obj.data.shape_keys.key_blocks
    base = np.empty(len(obj.data.vertices) * 3, np.float32)
    blocks[0].data.foreach_get("co", base)
    out = np.empty((len(names), len(obj.data.vertices) * 3), np.float32)
    for i, name in enumerate(names):
        blocks[name].data.foreach_get("co", out[i])
    return (out - base).reshape(len(names), -1, 3)


@pytest.mark.blender
@needs_assets
def test_streamed_generate_writes_what_the_whole_clip_path_computes(tmp_path, head, monkeypatch):
    from textalker_blender.blender import api, writers

    audio = tmp_path / "speech.wav"
    import soundfile

    soundfile.write(str(audio), speech(1.5), 16000)
    request = api.prepare(head, str(audio), steps=1, seed=2, output_folder=str(tmp_path / "whole"))
    whole = api.compute(request)
    whole_summary = api.apply(request, whole)
    whole_files = {p.name: p.read_bytes() for p in sorted(whole_summary.sequence_folder.glob("*.exr"))}
    api.remove_output(head, delete_files=False)

    monkeypatch.setattr(pipeline_module, "CHUNK_FRAMES", 7)  # several chunks
    summary = api.generate(head, str(audio), steps=1, seed=2, output_folder=str(tmp_path / "streamed"))
    assert summary.n_frames == whole_summary.n_frames == 45 and summary.exr_files == 45
    names = writers.generated_key_names(head)
    assert names == [f"TT_{i:04d}" for i in range(1, 46)]
    keyed = _key_offsets(head, names)
    expected = whole.result.offsets
    scale = np.abs(expected).max()
    assert scale > 1e-4  # the face moves
    np.testing.assert_allclose(keyed, expected, rtol=HALF_RTOL, atol=scale * HALF_RTOL)
    for part_name, part in api.template_parts(head).items():
        if part_name in whole.part_offsets:
            part_keys = writers.generated_key_names(part)
            np.testing.assert_allclose(_key_offsets(part, part_keys), whole.part_offsets[part_name],
                                       rtol=HALF_RTOL, atol=1e-6)
    # The EXR files are the same bytes: the maps are the same half floats. Both runs are on this
    # machine, so the comparison does not depend on the processor's floating-point path.
    streamed_files = {p.name: p.read_bytes() for p in sorted(summary.sequence_folder.glob("*.exr"))}
    assert streamed_files == whole_files


@pytest.mark.blender
@needs_assets
def test_streamed_arkit_weights_match_the_whole_clip_solve(tmp_path, head, monkeypatch):
    from textalker_blender.blender import api

    request = api.prepare(head, _clip(1.0), steps=1, seed=3, output_mode="ARKIT",
                          output_folder=str(tmp_path))
    whole = api.compute(request)
    monkeypatch.setattr(pipeline_module, "CHUNK_FRAMES", 8)
    handed = []
    streamed = api.compute_streamed(request, lambda first, maps, n, folds=None: handed.append((first, len(maps), n)))
    assert handed == [(first, min(8, 30 - first), 30) for first in range(0, 30, 8)]
    assert streamed.result.offsets is None and streamed.mesh_offsets is None  # no offsets kept
    np.testing.assert_allclose(streamed.arkit_weights, whole.arkit_weights, atol=1e-4)


@pytest.mark.blender
@needs_assets
@pytest.mark.parametrize("failure", ["cancel", "disk"])
def test_a_streamed_rerun_that_fails_part_way_keeps_the_previous_output(tmp_path, head, monkeypatch, failure):
    from robustness_support import snapshot

    from textalker_blender.blender import api, writers
    from textalker_blender.core.errors import ResourceError

    first = api.generate(head, _clip(1.0), steps=1, output_folder=str(tmp_path))
    before = snapshot()
    files_before = files_under(tmp_path / "textalker")
    assert len(files_before) == 30 + 1  # 30 wrinkle frames and the style's crease detail map
    assert sum(name.endswith("/crease_detail.exr") for name in files_before) == 1
    monkeypatch.setattr(pipeline_module, "CHUNK_FRAMES", 8)
    written = []
    real_write = writers.write_exr_sequence

    def write(maps, folder, first_frame=1, folds=None):
        if written and failure == "disk":
            raise OSError(28, "No space left on device")
        written.append(first_frame)
        return real_write(maps, folder, first_frame, folds=folds)

    monkeypatch.setattr(writers, "write_exr_sequence", write)
    cancel = threading.Event()

    def progress(fraction, stage):
        if stage == "decode" and written and failure == "cancel":
            cancel.set()

    expected = Cancelled if failure == "cancel" else ResourceError
    request = api.prepare(head, _clip(1.0), steps=1, output_folder=str(tmp_path))
    with pytest.raises(expected):
        api.run(request, progress=progress, cancel=cancel)
    # Files of one chunk or more were written before the failure ...
    assert written == ([1] if failure == "disk" else [1, 9])
    assert snapshot() == before  # ... and the scene and the first run's output are untouched
    assert files_under(tmp_path / "textalker") == files_before
    assert api.output_timing(head) == (first.frame_start, first.frame_end, 30.0)


@pytest.mark.blender
@needs_assets
def test_modal_job_writes_maps_as_they_come_and_escape_deletes_them(tmp_path, head, monkeypatch):
    from robustness_support import snapshot
    from types import SimpleNamespace

    from blender_support import bpy

    from textalker_blender.blender import api
    from textalker_blender.blender.operators import TEXTALKER_OT_generate
    from textalker_blender.core import run_files

    monkeypatch.setattr(pipeline_module, "CHUNK_FRAMES", 8)
    before = snapshot()
    request = api.prepare(head, _clip(3.0), steps=2, output_folder=str(tmp_path))
    job = api.GenerationJob(request)
    job.start()
    operator = SimpleNamespace(_job=job, _timer=None, reports=[], report=lambda kind, message: None)
    operator._finish = lambda context, message: TEXTALKER_OT_generate._finish(operator, context, message)
    timer = SimpleNamespace(type="TIMER")
    # Until the sequence is complete its files are in the run's hidden staging folder (issue #17).
    staging = run_files.staging_folder(request.sequence_folder)
    while not files_under(staging):
        assert TEXTALKER_OT_generate.modal(operator, bpy.context, timer) in ({"PASS_THROUGH"}, {"FINISHED"})
        assert not job.done or files_under(staging), "the job ended without writing"
        job.wait(0.02)
    assert not request.sequence_folder.exists()  # nothing under the final name before it is complete
    assert job._maps.maxsize == api.MAX_QUEUED_CHUNKS
    assert snapshot() == before  # files only: the scene changes in apply
    assert TEXTALKER_OT_generate.modal(operator, bpy.context, SimpleNamespace(type="ESC")) == {"CANCELLED"}
    job.wait(60)
    assert not job._thread.is_alive()
    assert files_under(tmp_path / "textalker") == []
    assert snapshot() == before


@pytest.mark.blender
@needs_assets
def test_streamed_run_falls_back_to_the_cpu_when_the_gpu_runs_out_of_memory(tmp_path, head, monkeypatch):
    """A GPU out of memory part way (after a chunk was written) restarts the run on the CPU: the
    same frames are written again and the summary says so."""
    import torch

    from textalker_blender.blender import api, generation

    real_load = api.load_pipeline
    cpu = real_load(api.prepare(head, _clip(0.5), device="cpu", steps=1, output_folder=str(tmp_path)))

    class OutOfMemoryPartWay:
        device = torch.device("cuda")
        template = cpu.template

        def generate_chunks(self, *args, **kwargs):
            stream = cpu.generate_chunks(*args, **kwargs)

            def chunks():
                yield next(stream)
                raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 1.00 GiB")

            return _StreamLike(stream, chunks())

    monkeypatch.setattr(generation, "load_pipeline", lambda request: OutOfMemoryPartWay() if request.device == "cuda" else cpu)
    monkeypatch.setattr(pipeline_module, "CHUNK_FRAMES", 5)
    request = api.prepare(head, _clip(0.5), device="cuda", steps=1, output_folder=str(tmp_path))
    summary = api.run(request)
    assert "ran out of memory" in summary.note and summary.n_frames == summary.exr_files == 15
    assert files_under(request.sequence_folder) == ["crease_detail.exr"] + [f"wrinkle_{i:04d}.exr" for i in range(1, 16)]


class _StreamLike:
    """A GenerationStream whose chunks come from another iterator (to inject a failure)."""

    def __init__(self, stream, chunks):
        self._stream, self._chunks = stream, chunks

    def __getattr__(self, name):
        return getattr(self._stream, name)

    def __iter__(self):
        return self._chunks

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self._stream.close()
