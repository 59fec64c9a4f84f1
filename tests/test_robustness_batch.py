"""Robustness, round 2 (issue #17): the batch command line on a farm.

Two runs on one .blend, runs killed part-way (SIGTERM, SIGINT, SIGKILL), bad arguments and
read-only or vanishing save targets. Each either works or ends with one line on stderr and a
non-zero exit status, before the model runs where the input can tell, and never loses the
user's .blend or leaves generated files that nothing references.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from robustness_support import files_under, needs_assets, registered_scene, template_head

bpy = pytest.importorskip("bpy")

from textalker_blender.blender import api, cli, generation, writers  # noqa: E402
from textalker_blender.core import run_files  # noqa: E402

pytestmark = [pytest.mark.blender, needs_assets]
REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def head_blend(tmp_path):
    """tmp_path/head.blend with the template head (object 'TexTalker Head'), and its bytes."""
    registered_scene()
    head = template_head()
    blend = tmp_path / "head.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(blend))
    return blend, head.name


def _model_must_not_run(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the model ran although the input was refused")

    monkeypatch.setattr(generation, "load_pipeline", refuse)


def _one_line_error(capsys) -> str:
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("TexTalker: "), captured.err
    assert "Traceback" not in captured.err
    return lines[0]


def _run_folders(blend: Path) -> list[str]:
    root = blend.parent / "textalker"
    return sorted(str(p.relative_to(root)) for p in root.glob("*/*")) if root.exists() else []


# --------------------------------------------------------------------------------------------
# Case 4 (and 6): every argument checked before the model runs, one line, non-zero exit


@pytest.mark.parametrize("arguments, message", [
    (["--steps", "0"], "steps must be a whole number from 1"),
    (["--steps", "2.5"], "steps must be a whole number from 1"),
    (["--steps", "501"], "steps must be a whole number from 1 to 500"),
    (["--seed", "1.5"], "seed must be a whole number"),
    (["--blink-rate", "-1"], "blink rate must be between 0 and 120"),
    (["--speaking-style", "no_such_style"], "Unknown speaking style 'no_such_style'"),
    (["--wrinkle-style", "99"], "Unknown wrinkle style 99"),
    (["--audio", "/nonexistent/speech.wav"], "Audio file not found"),
    (["--save", "/sys/textalker_read_only/out.blend"], "Cannot write the saved file out.blend"),
    (["--save", "elsewhere.txt"], "--save must name a .blend file"),
    (["--output-folder", "/sys/textalker_read_only"], "Cannot write the wrinkle maps"),
    (["--output-mode", "arkit", "--arkit-export", "/sys/textalker_read_only/w.csv"], "Cannot write the ARKit export"),
    (["--output-mode", "arkit", "--arkit-export", "weights.txt"], "must end in .csv or .json"),
    (["--save", "x.blend", "--no-save"], "not allowed with argument"),
])
def test_bad_arguments_are_one_line_before_the_model_runs(head_blend, speech_file, capsys, monkeypatch,
                                                          arguments, message):
    blend, head = head_blend
    original = blend.read_bytes()
    _model_must_not_run(monkeypatch)
    audio = [] if "--audio" in arguments else ["--audio", str(speech_file)]
    code = cli.main(["--blend", str(blend), "--object", head, *audio, *arguments])
    assert code == cli.EXIT_ERROR
    assert message in _one_line_error(capsys)
    assert blend.read_bytes() == original
    assert _run_folders(blend) == []


def test_full_disk_for_the_arkit_export_is_refused_before_the_model_runs(head_blend, speech_file, capsys,
                                                                          monkeypatch):
    from textalker_blender.core import resources

    blend, head = head_blend
    export = blend.parent / "exports" / "weights.csv"
    real_free = resources.free_disk_bytes
    monkeypatch.setattr(resources, "free_disk_bytes",
                        lambda folder: 1024 if Path(folder) == export.parent or export.parent in Path(folder).parents
                        else real_free(folder))
    _model_must_not_run(monkeypatch)
    code = cli.main(["--blend", str(blend), "--object", head, "--audio", str(speech_file), "--no-save",
                     "--output-mode", "arkit", "--arkit-export", str(export)])
    assert code == cli.EXIT_ERROR
    assert "Not enough disk space for the ARKit export" in _one_line_error(capsys)


@pytest.mark.parametrize("failure", ["disk_filled", "blender_cannot_write"])
def test_save_failing_after_generation_removes_the_output_and_keeps_the_blend(tmp_path, head_blend, speech_file,
                                                                              capsys, monkeypatch, failure):
    """The save fails after a successful generation (the disk filled while the model ran, or
    Blender cannot write its temporary `x.blend@`): one line, the new EXR files deleted (nothing
    orphaned), the .blend on disk untouched."""
    from textalker_blender.core import resources

    blend, head = head_blend
    original = blend.read_bytes()
    output = tmp_path / "maps"
    real_run = api.run

    def run_then_break_the_save(request, **kwargs):
        summary = real_run(request, **kwargs)
        assert files_under(output)  # the EXR files exist before the save
        if failure == "disk_filled":
            monkeypatch.setattr(resources, "free_disk_bytes", lambda folder: 1024)
        else:
            blend.with_name(blend.name + "@").mkdir()  # where Blender writes before renaming
        return summary

    monkeypatch.setattr(api, "run", run_then_break_the_save)
    code = cli.main(["--blend", str(blend), "--object", head, "--audio", str(speech_file), "--steps", "1",
                     "--output-folder", str(output)])
    assert code == cli.EXIT_ERROR
    line = _one_line_error(capsys)
    assert ("Not enough disk space for saving head.blend" if failure == "disk_filled" else "Could not save") in line
    assert "removed again" in line
    assert files_under(output) == []
    assert blend.read_bytes() == original
    assert not writers.generated_key_names(bpy.data.objects[head])


# --------------------------------------------------------------------------------------------
# Case 2: two runs on one .blend


def test_second_run_on_a_locked_blend_refuses_at_once(head_blend, speech_file, capsys, monkeypatch):
    blend, head = head_blend
    original = blend.read_bytes()
    _model_must_not_run(monkeypatch)
    with run_files.exclusive_lock(blend, "saving head.blend (test)"):
        code = cli.main(["--blend", str(blend), "--object", head, "--audio", str(speech_file), "--steps", "1"])
    assert code == cli.EXIT_ERROR
    assert "Another TexTalker run is saving head.blend" in _one_line_error(capsys)
    assert blend.read_bytes() == original
    assert _run_folders(blend) == []
    assert not run_files.lock_path_for(blend).exists()  # the lock file goes with the lock


def test_two_concurrent_batch_runs_on_one_blend_never_lose_it(head_blend, speech_file):
    """Two real processes on one file: each ends in success or the one-line refusal; the .blend
    opens, and every EXR folder on disk is the one it references."""
    blend, head = head_blend
    command = [sys.executable, "-m", "textalker_blender.blender.cli", "--blend", str(blend), "--object", head,
               "--audio", str(speech_file), "--steps", "1"]
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    runs = [subprocess.Popen(command, cwd=REPO_ROOT, env=environment, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(run.wait(timeout=600), *run.communicate()) for run in runs]
    codes = sorted(code for code, _, _ in results)
    assert codes in ([0, 0], [0, 1]), results
    for code, _out, err in results:
        if code == 1:
            assert "Another TexTalker run is saving head.blend" in err and "Traceback" not in err
    assert blend.is_file()
    registered_scene()
    bpy.ops.wm.open_mainfile(filepath=str(blend))
    referenced = {Path(bpy.path.abspath(i.filepath)).parent.name for i in bpy.data.images if i.get(writers.TAG)}
    on_disk = {Path(folder).name for folder in _run_folders(blend)}
    assert referenced and on_disk == referenced
    assert [p.name for p in blend.parent.iterdir() if p.name.endswith(run_files.LOCK_SUFFIX)] == []


# --------------------------------------------------------------------------------------------
# Case 3: killed runs leave nothing half-written


@pytest.mark.parametrize("signal_number, code, words", [
    (signal.SIGTERM, cli.EXIT_TERMINATED, "terminated (SIGTERM)"),
    (signal.SIGINT, cli.EXIT_INTERRUPTED, "interrupted"),
])
def test_signal_while_writing_exrs_removes_the_partial_sequence_with_one_line(
    tmp_path, head_blend, speech_file, capsys, monkeypatch, signal_number, code, words
):
    blend, head = head_blend
    original = blend.read_bytes()
    real_write = writers.write_exr_sequence
    written = []

    def write_then_get_killed(maps, folder, first_frame=1, folds=None):
        paths = real_write(maps[:3], folder, first_frame=first_frame,
                           folds=None if folds is None else folds[:3])
        written.extend(paths)
        os.kill(os.getpid(), signal_number)  # delivered at the next Python instruction
        return paths

    monkeypatch.setattr(writers, "write_exr_sequence", write_then_get_killed)
    # The host (Blender, a farm's wrapper script, an earlier library) may have its own handler that
    # does not raise: the CLI installs its own for the run and gives the old one back after.
    host_handler = lambda *args: None  # noqa: E731
    previous = signal.signal(signal_number, host_handler)
    try:
        assert cli.main(["--blend", str(blend), "--object", head, "--audio", str(speech_file), "--steps", "1"]) == code
        assert signal.getsignal(signal_number) is host_handler
    finally:
        signal.signal(signal_number, previous)
    assert words in _one_line_error(capsys)
    assert written and not any(path.exists() for path in written)
    assert files_under(blend.parent / "textalker") == []
    assert blend.read_bytes() == original
    assert signal.getsignal(signal.SIGTERM) is not None  # the previous handler is back


def test_staging_folder_of_a_killed_run_is_swept_by_the_next_run(tmp_path, speech_file):
    """A run killed with SIGKILL while writing (no handler runs) leaves a hidden .partial folder;
    the next run on the object deletes it, and a live run's folder is left alone."""
    scene = registered_scene()
    head = template_head()
    bpy.ops.wm.save_as_mainfile(filepath=str(tmp_path / "scene.blend"))
    object_folder = tmp_path / "textalker" / bpy.path.clean_name(head.name)
    killed = object_folder / "20260101-000000-dead00"
    script = textwrap.dedent(f"""
        import os, signal
        from pathlib import Path
        from textalker_blender.core.run_files import StagedFolder
        staged = StagedFolder({str(killed)!r}, lambda folder: 0)
        folder = staged.open()
        for i in range(1, 4):
            (folder / f"wrinkle_{{i:04d}}.exr").write_bytes(b"v/1\\x01" + bytes(100))
        (folder / "wrinkle_0004.exr").write_bytes(b"")  # the file being written
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT)
    assert result.returncode == -signal.SIGKILL
    staging = run_files.staging_folder(killed)
    assert len(list(staging.iterdir())) == 4
    # A run of this process still writing (its lock held; opened by hand: open() would sweep).
    live = run_files.StagedFolder(object_folder / "20260101-000000-live00", writers.delete_sequence_files)
    live._lock = run_files.try_lock(run_files.staging_lock_path(live.staging))
    live.staging.mkdir()
    assert staging.is_dir()
    try:
        summary = api.generate(head, str(speech_file), steps=1)
        assert not staging.exists() and not run_files.staging_lock_path(staging).exists()
        assert live.staging.is_dir()  # another run still writing: kept
        assert sorted(p.name for p in object_folder.iterdir()) == sorted(
            [summary.sequence_folder.name, live.staging.name, run_files.staging_lock_path(live.staging).name]
        )
    finally:
        live.abandon()
    del scene


# --------------------------------------------------------------------------------------------
# More of what a farm does (found while working on issue #17)


def test_corrupt_blend_is_one_line_not_a_traceback(tmp_path, speech_file, capsys, monkeypatch):
    """A truncated or garbage .blend (a copy cut short on a network share): Blender's RuntimeError
    used to escape as a traceback."""
    registered_scene()
    bad = tmp_path / "cut_short.blend"
    bad.write_bytes(b"BLENDER-v500" + bytes(range(256)) * 8)
    _model_must_not_run(monkeypatch)
    assert cli.main(["--blend", str(bad), "--audio", str(speech_file), "--steps", "1"]) == cli.EXIT_ERROR
    assert "cut_short.blend" in _one_line_error(capsys)
    assert bad.read_bytes().startswith(b"BLENDER-v500")


def test_lock_file_left_by_a_killed_run_does_not_block_the_next(head_blend, speech_file):
    """SIGKILL leaves the lock file but the OS drops its lock: the next run takes it."""
    blend, head = head_blend
    lock_path = run_files.lock_path_for(blend)
    script = textwrap.dedent(f"""
        import os, signal
        from textalker_blender.core.run_files import try_lock
        from pathlib import Path
        assert try_lock(Path({str(lock_path)!r})) is not None
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    assert subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT).returncode == -signal.SIGKILL
    assert lock_path.exists()
    assert cli.main(["--blend", str(blend), "--object", head, "--audio", str(speech_file), "--steps", "1"]) == 0
    assert not lock_path.exists()


def test_concurrent_runs_into_one_output_folder_both_work(tmp_path, head_blend, speech_file):
    """Two processes, two .blend files, one --output-folder: each gets its own run folder."""
    blend, head = head_blend
    other = tmp_path / "other.blend"
    shutil.copy(blend, other)
    output = tmp_path / "shared maps"
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    runs = [
        subprocess.Popen([sys.executable, "-m", "textalker_blender.blender.cli", "--blend", str(path), "--object",
                          head, "--audio", str(speech_file), "--steps", "1", "--output-folder", str(output)],
                         cwd=REPO_ROOT, env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for path in (blend, other)
    ]
    results = [(run.wait(timeout=600), *run.communicate()) for run in runs]
    assert [code for code, _, _ in results] == [0, 0], results
    folders = [p for p in (output / "textalker").glob("*/*")]
    assert len(folders) == 2 and all(not p.name.startswith(".") for p in folders)
    assert all(len(list(p.glob("wrinkle_*.exr"))) == 15 for p in folders)


def test_sigterm_while_the_model_runs_is_one_line_and_leaves_nothing(head_blend, speech_file, capsys, monkeypatch):
    """Stopped by the farm's scheduler before any file is written (while the audio is read)."""
    from textalker_blender.core import pipeline as pipeline_module

    blend, head = head_blend
    original = blend.read_bytes()
    real_load = pipeline_module.load_audio_with_report

    def load_then_get_terminated(*args, **kwargs):
        loaded = real_load(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGTERM)
        return loaded

    monkeypatch.setattr(pipeline_module, "load_audio_with_report", load_then_get_terminated)
    code = cli.main(["--blend", str(blend), "--object", head, "--audio", str(speech_file), "--steps", "1"])
    assert code == cli.EXIT_TERMINATED
    assert "terminated (SIGTERM)" in _one_line_error(capsys)
    assert files_under(blend.parent / "textalker") == [] and blend.read_bytes() == original
    assert not run_files.lock_path_for(blend).exists()


def test_sweep_deletes_only_sequence_files_and_never_follows_links(tmp_path):
    """A hostile or unlucky folder: a user's own '.x.partial' folder with other files keeps them;
    a '.y.partial' symlink to another folder is not followed."""
    parent = tmp_path / "textalker" / "Head"
    parent.mkdir(parents=True)
    mixed = parent / ".mine.partial"
    mixed.mkdir()
    (mixed / "notes.txt").write_text("keep me")
    (mixed / "wrinkle_0001.exr").write_bytes(b"v/1\x01")
    elsewhere = tmp_path / "precious"
    elsewhere.mkdir()
    (elsewhere / "wrinkle_0001.exr").write_bytes(b"v/1\x01")
    (parent / ".link.partial").symlink_to(elsewhere, target_is_directory=True)
    removed = run_files.sweep_stale_staging(parent, writers.delete_sequence_files)
    assert removed == []
    assert (mixed / "notes.txt").read_text() == "keep me" and not (mixed / "wrinkle_0001.exr").exists()
    assert (elsewhere / "wrinkle_0001.exr").exists()
    assert not any(p.name.endswith(".lock") for p in parent.iterdir())


def test_run_inside_blender_rereads_a_file_saved_since_it_was_opened(tmp_path, head_blend, speech_file):
    """`blender -b head.blend --python-expr ...cli.main()`: another run saved head.blend after this
    Blender read it. Saving the stale copy would drop that run's output (its EXR folder orphaned);
    under the lock the file is read again, so both outputs' changes survive."""
    blend, head = head_blend
    # What another run left in the file meanwhile: here, an object it added.
    bpy.data.objects.new("Saved by the other run", None).use_fake_user = True
    newer = tmp_path / "newer.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(newer), copy=True)
    bpy.ops.wm.open_mainfile(filepath=str(blend))  # this run's Blender opened the file earlier
    shutil.copy(newer, blend)
    assert cli.main(["--object", head, "--audio", str(speech_file), "--steps", "1"]) == 0
    registered_scene()
    bpy.ops.wm.open_mainfile(filepath=str(blend))
    assert "Saved by the other run" in bpy.data.objects
    assert writers.generated_key_names(bpy.data.objects[head])


def test_tilde_paths_mean_the_home_folder(tmp_path, head_blend, speech_file, monkeypatch):
    """Quoted or generated argument lists keep '~' unexpanded: it used to become a folder named
    '~' in the working directory (maps, exports) or 'Audio file not found'."""
    blend, head = head_blend
    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(speech_file, home / "speech.wav")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(tmp_path)
    code = cli.main(["--blend", str(blend), "--object", head, "--audio", "~/speech.wav", "--steps", "1",
                     "--output-folder", "~/maps", "--save", "~/out.blend"])
    assert code == 0
    assert (home / "out.blend").is_file() and list((home / "maps" / "textalker").glob("*/*/wrinkle_0001.exr"))
    assert not (tmp_path / "~").exists()
