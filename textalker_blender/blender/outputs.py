"""What a run leaves on disk and on the object: the EXR sequence (written under a staging name,
renamed when complete) and the wrinkle style's crease detail map beside it, this session's run
folders (swept once undone), and removal of all output of both modes."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import bpy
import numpy as np

from ..core import resources, run_files
from ..core.errors import ResourceError, TexTalkerError
from . import arkit_writer, writers
from .results import ExrSequence

class SequenceWriter:
    """Writes a streamed run's EXR sequence chunk by chunk (main thread: Blender's image writer).

    The files go to a hidden staging folder beside the run's folder (`core.run_files`), renamed
    to the run's folder by `commit()` once the sequence is complete (`apply` does it through
    `write_sequence`): a run killed part-way leaves no folder that looks complete, and the next
    run on the object sweeps the killed run's staging folder. The disk is checked for the whole
    sequence before the first file (it may have filled since `prepare`); any failure deletes
    every file written so far and, for OS errors, says why in a ResourceError. `discard()`
    deletes them too (a cancelled or failed run)."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)  # the final folder, as recorded on the object
        self.staged = run_files.StagedFolder(self.folder, writers.delete_sequence_files)
        self.written = 0
        self._checked = False

    def write(self, first_frame: int, maps: np.ndarray, n_frames: int, folds: np.ndarray | None = None) -> None:
        """Writes a chunk: `maps` (n, H, W, 3) albedo ratios and `folds` (n, H, W) fold
        activations (None: weights without fold maps) of frames first_frame... (0-based)."""
        with _deleted_on_failure(self.staged.folder, self.discard):
            if not self._checked:
                _STAGED_WRITERS[self.folder] = self
                target = self.staged.open()
                size = max(maps.shape[1], maps.shape[2])
                resources.check_disk_space(target, n_frames * resources.exr_bytes_per_frame(size))
                self._checked = True
            paths = writers.write_exr_sequence(maps, self.staged.folder, first_frame=first_frame + 1,
                                               **_fold_keyword(folds))
            _check_written(paths)
            self.written = max(self.written, first_frame + len(paths))

    def commit(self) -> Path:
        """The complete sequence under its final name."""
        _STAGED_WRITERS.pop(self.folder, None)
        return self.staged.commit()

    def discard(self) -> int:
        self.written = 0
        _STAGED_WRITERS.pop(self.folder, None)
        removed = writers.delete_sequence_files(self.staged.folder)
        if not self.staged.committed:
            self.staged.abandon()
        return removed


# Final folder -> the SequenceWriter still writing it under its staging name (`write_sequence`
# renames it when `apply` takes the sequence).
_STAGED_WRITERS: dict[Path, SequenceWriter] = {}


# The EXR folders this Blender session wrote -> whether a saved file referenced them. A run that
# was undone (Ctrl+Z removes its keys and material, not its files) leaves a folder nothing uses;
# once a new generation succeeds the undo history past it is gone, so such a folder can never be
# used again unless a file saved while it was in use refers to it.
_SESSION_RUNS: dict[Path, bool] = {}


def _referenced_folders() -> set[Path]:
    """Folders of the image sequences in the open file (any image, not only the add-on's)."""
    folders = set()
    for image in bpy.data.images:
        if image.filepath:
            path = bpy.path.abspath(image.filepath, library=image.library)
            folders.add(Path(os.path.abspath(path)).parent)
    return folders


def sweep_undone_runs(keep: Path | None = None) -> list[Path]:
    """Deletes the sequence files of this session's runs that no image of the open file uses and
    no saved file used (undone, or from a file closed unsaved); returns their folders."""
    used = _referenced_folders()
    removed = []
    for folder, saved in list(_SESSION_RUNS.items()):
        if saved or folder == keep or Path(os.path.abspath(folder)) in used:
            continue
        writers.delete_sequence_files(folder)
        del _SESSION_RUNS[folder]
        removed.append(folder)
    return removed


@bpy.app.handlers.persistent
def _mark_saved_runs(*_args) -> None:
    """save_post: the session's run folders the saved file uses are never swept."""
    used = _referenced_folders()
    for folder in _SESSION_RUNS:
        if Path(os.path.abspath(folder)) in used:
            _SESSION_RUNS[folder] = True


def record_session_run(folder: Path) -> None:
    """A run folder this session wrote: swept once undone, kept once a saved file uses it."""
    _SESSION_RUNS.setdefault(Path(folder), False)
    _watch_saves()


def _watch_saves() -> None:
    if _mark_saved_runs not in bpy.app.handlers.save_post:
        bpy.app.handlers.save_post.append(_mark_saved_runs)


def _fold_keyword(folds) -> dict:
    """`folds=` for `writers.write_exr_sequence` only when there are fold maps, so a wrapper of
    the writer's earlier signature (maps, folder, first_frame) still works for older weights."""
    return {} if folds is None else {"folds": folds}


def write_sequence(maps, folder: Path, folds: np.ndarray | None = None) -> list[Path]:
    """The EXR sequence, after checking the disk has room for it; on any failure (disk full,
    folder not writable, cancelled) the files written so far are deleted and the error says why.

    `maps` is (T, H, W, 3) with `folds` (T, H, W) or None, or the `ExrSequence` a streamed run
    already wrote there: its files are checked (all there, all EXR) and returned."""
    if isinstance(maps, ExrSequence):
        with _deleted_on_failure(folder):
            writer = _STAGED_WRITERS.get(Path(maps.folder))
            if writer is not None:
                _check_written([writers.exr_frame_path(writer.staged.folder, i + 1) for i in range(maps.n_frames)])
                writer.commit()
            return _check_written(maps.paths)
    maps = np.asarray(maps)
    if maps.ndim == 4:
        needed = maps.shape[0] * resources.exr_bytes_per_frame(max(maps.shape[1], maps.shape[2]))
        resources.check_disk_space(folder, needed)  # the disk may have filled during compute
    with _deleted_on_failure(folder):
        return _check_written(writers.write_exr_sequence(maps, folder, **_fold_keyword(folds)))


def write_crease_detail(detail_mm: np.ndarray | None, folder: Path) -> Path | None:
    """The wrinkle style's crease detail map (Hd, Wd) in millimetres as `crease_detail.exr` in
    the run's `folder` (beside its complete sequence), or None when the weights have none. Call it
    before `writers.ensure_wrinkle_material`, which draws creases when it finds the file. The disk
    is checked first (room for the map uncompressed); on any failure the run's files in `folder`
    are deleted and OS errors become a ResourceError that says why."""
    if detail_mm is None:
        return None
    detail_mm = np.asarray(detail_mm)
    with _deleted_on_failure(folder):
        if detail_mm.ndim == 2:
            resources.check_disk_space(folder, detail_mm.shape[0] * detail_mm.shape[1] * 6)  # half RGB
        path = writers.write_crease_detail(detail_mm, folder)
        _check_written([path])
        return path


@contextlib.contextmanager
def _deleted_on_failure(folder: Path, discard=None):
    """On any failure inside (cancel included) the EXR files written so far are deleted
    (`discard()`, by default every sequence file in `folder`); OS-level failures are re-raised
    as the ResourceError of `_write_error`."""
    try:
        yield
    except BaseException as error:
        if discard is None:
            writers.delete_sequence_files(folder)
        else:
            discard()
        translated = _write_error(error, folder)
        if translated is error:
            raise
        raise translated from error


def _check_written(paths: list[Path]) -> list[Path]:
    """`paths`, after checking each is an EXR file (Blender's writer does not report every
    failed write); OSError otherwise."""
    unwritten = [path.name for path in paths if not _is_exr_file(path)]
    if unwritten:
        raise OSError(f"{len(unwritten)} files were not written ({', '.join(unwritten[:3])})")
    return paths


def _write_error(error: BaseException, folder: Path) -> BaseException:
    """The error to raise for a failed EXR write: OS-level failures become a ResourceError that
    names the folder and its free space; anything else (a cancel, a TexTalkerError) as it is."""
    if isinstance(error, (OSError, RuntimeError)) and not isinstance(error, TexTalkerError):
        free = resources.format_bytes(resources.free_disk_bytes(folder))
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        return ResourceError(
            f"Writing the wrinkle maps to {folder} failed ({reason}); {free} free there. "
            "Check that the folder is writable and the disk is not full; nothing was changed"
        )
    return error


def _is_exr_file(path: Path) -> bool:
    """A regular file starting with the OpenEXR magic number."""
    import stat

    try:
        if not stat.S_ISREG(path.stat().st_mode):
            return False
        with open(path, "rb") as handle:
            return handle.read(4) == b"\x76\x2f\x31\x01"
    except OSError:
        return False


def remove_all_output(obj: bpy.types.Object, delete_files: bool = True) -> dict:
    """Both output modes' keys and curves (restoring the user's ARKit keys), material, files."""
    created_arkit_keys = len(arkit_writer.created_key_names(obj))
    arkit_curves = arkit_writer.remove_arkit_output(obj)
    counts = writers.remove_textalker_output(obj, delete_files=delete_files)
    counts["shape_keys"] += created_arkit_keys
    counts["arkit_curves"] = arkit_curves
    return counts


def has_output(obj: bpy.types.Object | None) -> bool:
    """The object carries output of either mode (the Remove operator's and panel's test)."""
    return writers.has_textalker_output(obj) or arkit_writer.has_arkit_output(obj)


def output_timing(obj: bpy.types.Object | None) -> tuple[int, int, float] | None:
    """(first frame, last frame, fps) of the generated animation of either mode, or None."""
    if obj is None or obj.type != "MESH":
        return None
    return writers.generated_timing(obj) or arkit_writer.generated_timing(obj)
