"""Robustness, part 4: faults during a run (issue #8), in real Blender scenes (bpy module).

CUDA asked for but absent; CUDA out of memory (injected: this machine has no GPU; the exception
is raised by a stand-in GPU pipeline and the fallback to the real CPU pipeline is checked);
cancellation at every stage; Blender closing or the file being reloaded mid-run; a second
Generate while one runs; a read-only output folder; a disk filling up while the EXR files are
written (a real ENOSPC: a small tmpfs when mounting is allowed, else /dev/full).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from robustness_support import (
    files_under,
    needs_assets,
    snapshot,
    template_head,
    write_audio,
)

bpy = pytest.importorskip("bpy")

import torch  # noqa: E402

from blender_support import ModalOperatorStandIn  # noqa: E402

from textalker_blender.blender import api, generation, writers  # noqa: E402
from textalker_blender.core import resources  # noqa: E402
from textalker_blender.core.errors import Cancelled, DeviceError, ResourceError, TexTalkerError  # noqa: E402

pytestmark = [pytest.mark.blender, needs_assets]
REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def head(saved_scene):
    obj = template_head()
    saved_scene.sequence_editor_create()
    return obj


# --------------------------------------------------------------------------------------------
# Devices


def test_cuda_requested_without_cuda(tmp_path, head, speech_file, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    before = snapshot()
    with pytest.raises(DeviceError, match="CUDA was requested but no CUDA GPU is usable"):
        api.generate(head, str(speech_file), device="cuda", steps=1)
    assert snapshot() == before
    assert files_under(tmp_path / "textalker") == []
    summary = api.generate(head, str(speech_file), device="auto", steps=1)  # auto picks the CPU
    assert summary.n_frames == 15


class _OutOfMemoryGpuPipeline:
    """Stands in for a CUDA pipeline whose model step runs out of GPU memory (injected fault)."""

    device = torch.device("cuda")

    def __init__(self, error: BaseException):
        self.error = error
        self.calls = 0

    def generate(self, *args, **kwargs):
        self.calls += 1
        raise self.error


@pytest.mark.parametrize(
    "error",
    [
        torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
        RuntimeError("CUDA error: out of memory"),
    ],
    ids=["OutOfMemoryError", "RuntimeError"],
)
def test_injected_cuda_out_of_memory_falls_back_to_the_cpu(tmp_path, head, speech_file, monkeypatch, error):
    gpu = _OutOfMemoryGpuPipeline(error)
    real_load = api.load_pipeline
    devices = []

    def load_pipeline(request):
        devices.append(request.device)
        return gpu if request.device == "cuda" else real_load(request)

    monkeypatch.setattr(generation, "load_pipeline", load_pipeline)
    request = api.prepare(head, str(speech_file), device="cuda", steps=1)
    animation = api.compute(request)
    assert gpu.calls == 1 and devices == ["cuda", "cpu"]
    assert animation.result.device == "cpu"
    summary = api.apply(request, animation)
    assert "ran out of memory" in summary.note and "CPU" in summary.note
    assert "ran out of memory" in summary.message
    assert summary.n_frames == 15 and summary.exr_files == 15


def test_other_gpu_errors_and_cpu_out_of_memory_are_not_retried(tmp_path, head, speech_file, monkeypatch):
    request = api.prepare(head, str(speech_file), device="cpu", steps=1)
    gpu = _OutOfMemoryGpuPipeline(ValueError("a bug, not a full GPU"))
    monkeypatch.setattr(generation, "load_pipeline", lambda request: gpu)
    with pytest.raises(ValueError, match="a bug"):
        api.compute(request)
    cpu = _OutOfMemoryGpuPipeline(RuntimeError("out of memory"))
    cpu.device = torch.device("cpu")
    monkeypatch.setattr(generation, "load_pipeline", lambda request: cpu)
    with pytest.raises(RuntimeError, match="out of memory"):
        api.compute(request)
    assert cpu.calls == 1  # no endless retry on the CPU


# --------------------------------------------------------------------------------------------
# Cancellation


@pytest.mark.parametrize("stage", ["audio", "features", "diffusion", "decode", "resample"])
def test_cancel_at_every_stage_leaves_scene_and_disk_unchanged(tmp_path, head, speech_file, stage):
    request = api.prepare(head, str(speech_file), steps=2)
    cancel = threading.Event()
    seen = []

    def progress(fraction, name):
        seen.append(name)
        if name == stage:
            cancel.set()

    before = snapshot()
    with pytest.raises(Cancelled):
        api.compute(request, progress=progress, cancel=cancel)
    assert seen[-1] == stage  # nothing ran past the stage where the user cancelled
    assert snapshot() == before
    assert files_under(tmp_path / "textalker") == []


def test_cancel_while_writing_removes_partial_output(tmp_path, head, speech_file, monkeypatch):
    """A failure (or an interrupt) after some EXR files and keys exist removes all of them."""
    request = api.prepare(head, str(speech_file), steps=1)
    animation = api.compute(request)
    before = snapshot()
    real_material = writers.ensure_wrinkle_material

    def interrupted(*args, **kwargs):
        # the files were written: 15 wrinkle frames and the style's crease detail map
        assert files_under(request.sequence_folder) == ["crease_detail.exr"] + [f"wrinkle_{i:04d}.exr" for i in range(1, 16)]
        raise Cancelled("Generation cancelled.")

    monkeypatch.setattr(writers, "ensure_wrinkle_material", interrupted)
    with pytest.raises(Cancelled):
        api.apply(request, animation)
    assert snapshot() == before
    assert files_under(tmp_path / "textalker") == []
    monkeypatch.setattr(writers, "ensure_wrinkle_material", real_material)


def test_file_reloaded_mid_run_cancels_the_job_and_changes_nothing(tmp_path, head, speech_file):
    from textalker_blender.blender.operators import TEXTALKER_OT_generate

    path = write_audio(tmp_path / "long.wav", seconds=4.0)
    request = api.prepare(head, str(path), steps=4)
    job = api.GenerationJob(request)
    job_state = bpy.context.window_manager.textalker_job
    job_state.running = True
    job.start()
    operator = ModalOperatorStandIn(job)
    # Loading a file ends modal operators through their cancel(): what Blender calls here.
    TEXTALKER_OT_generate.cancel(operator, bpy.context)
    assert job.cancel_event.is_set() and not job_state.running
    bpy.ops.wm.open_mainfile(filepath=str(tmp_path / "scene.blend"))
    job.wait(60)
    assert isinstance(job.error, Cancelled)
    assert api.blocking_reason(bpy.context) != "A generation is running"
    assert "TexTalker Head" not in bpy.data.objects  # the reloaded file, without the run's output
    assert files_under(tmp_path / "textalker") == []
    # A late apply of the old request finds no target and changes nothing.
    before = snapshot()
    with pytest.raises(TexTalkerError, match="deleted during generation"):
        api.apply(request, SimpleNamespace(result=None, note=""))
    assert snapshot() == before


def test_blender_quitting_mid_run_stops_the_worker_and_writes_nothing(tmp_path):
    script = textwrap.dedent(
        f"""
        import sys, time
        from blender_support import bpy
        from robustness_support import registered_scene, template_head, write_audio
        from textalker_blender.blender import api
        from pathlib import Path
        folder = Path({str(tmp_path)!r})
        registered_scene()
        bpy.ops.wm.save_as_mainfile(filepath=str(folder / "scene.blend"))
        head = template_head()
        request = api.prepare(head, str(write_audio(folder / "long.wav", seconds=20.0)), steps=8)
        job = api.GenerationJob(request)
        job.start()
        while job.poll_progress() is None:
            time.sleep(0.05)
        print("QUITTING", flush=True)
        bpy.ops.wm.quit_blender()
        sys.exit(0)  # bpy-module mode: quit_blender does not end Python
        """
    )
    # The checkout and tests/ (blender_support, robustness_support) on the child's path.
    environment = {**os.environ, "OMP_NUM_THREADS": "1",
                   "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), str(REPO_ROOT / "tests")])}
    process = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env=environment,
    )
    output = []
    for line in process.stdout:
        output.append(line)
        if line.startswith("QUITTING"):
            quit_at = time.monotonic()
            break
    else:
        process.wait(60)
        pytest.fail("the job did not start:\n" + "".join(output[-30:]))
    rest, _ = process.communicate(timeout=60)
    exit_s = time.monotonic() - quit_at
    assert process.returncode == 0, "".join(output[-10:]) + rest
    assert exit_s < api.EXIT_WAIT_S + 5.0  # the model is not left running to the end
    assert files_under(tmp_path / "textalker") == []


def test_second_generate_while_one_runs_is_refused(tmp_path, head, speech_file):
    scene = bpy.context.scene
    scene.textalker.audio_source = "FILE"
    scene.textalker.audio_file = str(speech_file)
    scene.textalker.steps = 1
    assert api.blocking_reason(bpy.context) is None
    job_state = bpy.context.window_manager.textalker_job
    job_state.running = True
    try:
        before = snapshot()
        assert api.blocking_reason(bpy.context) == "A generation is running"
        with pytest.raises(RuntimeError, match="A generation is running"):
            bpy.ops.textalker.generate()
        assert snapshot() == before
    finally:
        job_state.running = False


def test_concurrent_api_runs_are_serialised_and_equal_to_sequential_runs(tmp_path, head, speech_file):
    """Scripts may call compute from two threads: the Pipeline's lock runs them one at a time."""
    request = api.prepare(head, str(speech_file), steps=1, seed=4)
    results = [None, None]

    def run(index):
        results[index] = api.compute(request).result.offsets

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    np.testing.assert_array_equal(results[0], results[1])
    np.testing.assert_array_equal(results[0], api.compute(request).result.offsets)


# --------------------------------------------------------------------------------------------
# Output folder and disk


def test_read_only_output_folder_is_refused_before_any_work(tmp_path, head, speech_file, monkeypatch):
    def not_called(*args, **kwargs):
        raise AssertionError("the model ran although the output folder is not writable")

    monkeypatch.setattr(generation, "compute", not_called)
    folders = ["/sys/textalker_cannot_write_here"]  # read-only even for root
    if os.geteuid() != 0:  # root ignores permission bits
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o500)
        folders.append(str(locked))
    before = snapshot()
    for folder in folders:
        with pytest.raises(ResourceError, match="Cannot write the wrinkle maps"):
            api.generate(head, str(speech_file), steps=1, output_folder=folder)
    assert snapshot() == before
    assert not Path(folders[0]).exists()


def test_too_little_disk_space_is_refused_before_any_work(tmp_path, head, speech_file, monkeypatch):
    monkeypatch.setattr(resources, "free_disk_bytes", lambda folder: 100 * 1024**2)
    monkeypatch.setattr(resources, "DISK_RESERVE_BYTES", 99 * 1024**2)  # 1 MB usable: 15 maps need 1.5
    before = snapshot()
    with pytest.raises(ResourceError, match="Not enough disk space for the wrinkle maps"):
        api.prepare(head, str(speech_file), steps=1)
    assert snapshot() == before


def test_disk_filled_during_compute_is_caught_before_writing(tmp_path, head, speech_file, monkeypatch):
    request = api.prepare(head, str(speech_file), steps=1)
    animation = api.compute(request)
    monkeypatch.setattr(resources, "free_disk_bytes", lambda folder: 0)
    before = snapshot()
    with pytest.raises(ResourceError, match="Not enough disk space"):
        api.apply(request, animation)
    assert snapshot() == before
    assert files_under(tmp_path / "textalker") == []


def _small_tmpfs(mount_point: Path, size: str) -> bool:
    if not sys.platform.startswith("linux") or os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    mount_point.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount_point)], capture_output=True
    )
    return result.returncode == 0


@pytest.mark.parametrize("device", ["tmpfs", "dev_full"])
def test_disk_full_while_writing_exrs(tmp_path, head, speech_file, monkeypatch, device):
    """A real 'No space left on device' on the 4th file: a clear message, no file left behind,
    the scene unchanged."""
    if device == "tmpfs":
        small = tmp_path / "small disk"
        if not _small_tmpfs(small, "300k"):
            pytest.skip("cannot mount a small tmpfs here (needs root on Linux)")
        try:
            # Without the space checks (they would refuse this run up front, as they should).
            monkeypatch.setattr(resources, "check_disk_space", lambda *args, **kwargs: None)
            request = api.prepare(head, str(speech_file), steps=1, output_folder=str(small))
            animation = api.compute(request)
            noise = np.random.default_rng(0).uniform(0.5, 1.5, animation.result.wrinkle_maps.shape)
            animation.result.wrinkle_maps = noise.astype(np.float16)  # barely compressible
            before = snapshot()
            with pytest.raises(ResourceError, match="Writing the wrinkle maps .* failed") as raised:
                api.apply(request, animation)
            assert "disk is not full" in str(raised.value)
            assert snapshot() == before
            assert files_under(small) == []
        finally:
            subprocess.run(["umount", str(small)], check=False)
        return
    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full on this system")
    request = api.prepare(head, str(speech_file), steps=1)
    animation = api.compute(request)
    request.sequence_folder.mkdir(parents=True)
    os.symlink("/dev/full", writers.exr_frame_path(request.sequence_folder, 4))  # writes: ENOSPC
    before = snapshot()
    # Blender reports the failed write, or writes nothing and the check of the files finds it.
    with pytest.raises(ResourceError, match="Writing the wrinkle maps .* failed") as raised:
        api.apply(request, animation)
    assert "\n" not in str(raised.value)
    assert snapshot() == before
    assert files_under(tmp_path / "textalker") == []
