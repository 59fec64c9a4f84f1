"""Files a run writes that must survive other runs and kills (issue #17): exclusive locks, and
EXR sequences written under a temporary name.

- `exclusive_lock(path)`: an OS lock (flock on Unix, LockFileEx on Windows, through the
  `filelock` package torch already depends on) on `.<name>.textalker-lock` beside `path`. A second
  run asking for it gets a `ResourceError` at once instead of saving over the first (two batch runs
  saving one .blend lost the file: Blender's own save renames `x.blend@` over `x.blend`, and two
  of them interleave). The OS drops the lock when its process dies, so a killed run never leaves a
  stale lock; the lock file is deleted on release (filelock retries an inode unlinked under it).
- `staging_folder(final)`: a run writes its EXR files to `.<run id>.partial` beside the final
  folder, holding `.<run id>.partial.lock`, and renames the folder to its final name only when
  the sequence is complete. A run killed part-way (SIGKILL, power loss) leaves a `.partial` folder
  whose lock nobody holds; `sweep_stale_staging(parent)` deletes such folders (their sequence
  files only) at the start of the next run on the same object. A complete, renamed folder is
  never swept: only the add-on's records (the material) say whether it is in use.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from .errors import ResourceError

LOCK_SUFFIX = ".textalker-lock"
STAGING_SUFFIX = ".partial"
STAGING_LOCK_SUFFIX = ".partial.lock"


def lock_path_for(path: str | os.PathLike) -> Path:
    path = Path(os.path.abspath(path))
    return path.with_name(f".{path.name}{LOCK_SUFFIX}")


def _file_lock(lock_path: Path):
    from filelock import FileLock

    # thread_local=False: the modal operator's worker and the main thread share one run's lock.
    return FileLock(str(lock_path), timeout=0, thread_local=False, is_singleton=False)


def try_lock(lock_path: Path):
    """The acquired filelock lock on `lock_path`, or None when another process holds it."""
    from filelock import Timeout

    lock = _file_lock(lock_path)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        return None
    return lock


def release(lock, delete: bool = True) -> None:
    """Releases `lock`; with `delete`, its file is unlinked first (while still held, so no other
    process can be between its own open and flock on the name)."""
    if lock is None or not lock.is_locked:
        return
    if delete:
        with contextlib.suppress(OSError):
            os.unlink(lock.lock_file)
    lock.release(force=True)


@contextlib.contextmanager
def exclusive_lock(path: str | os.PathLike, what: str):
    """Holds the lock of `path` for the block; ResourceError at once when another run holds it.
    `what` says what the lock protects, for the message ("saving scene.blend")."""
    lock_path = lock_path_for(path)
    try:
        lock = try_lock(lock_path)
    except OSError as error:
        raise ResourceError(
            f"Cannot lock {path} for {what}: {error.strerror or error}. Check that its folder is writable"
        ) from None
    if lock is None:
        raise ResourceError(
            f"Another TexTalker run is {what} ({lock_path} is locked). Wait for it to finish, or "
            "give this run another file (--save OTHER.blend)"
        )
    try:
        yield lock_path
    finally:
        release(lock)


def staging_folder(final: str | os.PathLike) -> Path:
    """Where the EXR files of the run whose output goes to `final` are written until complete."""
    final = Path(final)
    return final.with_name(f".{final.name}{STAGING_SUFFIX}")


def staging_lock_path(staging: Path) -> Path:
    return staging.with_name(staging.name[: -len(STAGING_SUFFIX)] + STAGING_LOCK_SUFFIX)


def sweep_stale_staging(parent: str | os.PathLike, delete_files) -> list[Path]:
    """Deletes the staging folders under `parent` whose run is gone (nobody holds their lock);
    `delete_files(folder)` removes a folder's sequence files (and only those). Returns the
    folders removed. Folders of live runs (in this process or another) are left alone."""
    parent = Path(parent)
    removed: list[Path] = []
    try:
        entries = list(parent.iterdir())
    except OSError:
        return removed
    for entry in entries:
        name = entry.name
        if name.startswith(".") and name.endswith(STAGING_SUFFIX) and entry.is_dir() and not entry.is_symlink():
            lock = _try_lock_quietly(staging_lock_path(entry))
            if lock is None:
                continue
            try:
                delete_files(entry)
                with contextlib.suppress(OSError):
                    entry.rmdir()  # only if nothing but sequence files was in it
                if not entry.exists():
                    removed.append(entry)
            finally:
                release(lock)
        elif name.startswith(".") and name.endswith(STAGING_LOCK_SUFFIX) and entry.is_file():
            # A lock left by a run killed after its rename: removed once nobody holds it.
            if not staging_folder_of_lock(entry).exists():
                release(_try_lock_quietly(entry))
    return removed


def staging_folder_of_lock(lock_path: Path) -> Path:
    return lock_path.with_name(lock_path.name[: -len(STAGING_LOCK_SUFFIX)] + STAGING_SUFFIX)


def _try_lock_quietly(lock_path: Path):
    try:
        return try_lock(lock_path)
    except OSError:
        return None


class StagedFolder:
    """One run's EXR folder: written as `staging`, renamed to `final` by `commit()`.

    `open()` makes the staging folder and takes its lock (sweeping the stale staging folders of
    earlier, killed runs beside it first); `commit()` renames it and drops the lock; `abandon()`
    drops the lock (the caller deletes the files first)."""

    def __init__(self, final: str | os.PathLike, delete_files):
        self.final = Path(final)
        self.staging = staging_folder(self.final)
        self._delete_files = delete_files
        self._lock = None
        self.committed = False

    @property
    def folder(self) -> Path:
        """Where the files are now."""
        return self.final if self.committed else self.staging

    def open(self) -> Path:
        if self._lock is not None or self.committed:
            return self.folder
        self.final.parent.mkdir(parents=True, exist_ok=True)
        sweep_stale_staging(self.final.parent, self._delete_files)
        self._lock = try_lock(staging_lock_path(self.staging))
        if self._lock is None:  # uuid run ids: only a copy of this very run could hold it
            raise ResourceError(f"The output folder {self.staging} is in use by another run")
        self.staging.mkdir(exist_ok=True)
        return self.staging

    def commit(self) -> Path:
        """Renames the complete sequence to its final folder (made empty when nothing was
        written); returns it."""
        if self.committed:
            return self.final
        if self.staging.is_dir():
            os.replace(self.staging, self.final)
        else:
            self.final.mkdir(parents=True, exist_ok=True)
        self.committed = True
        release(self._lock)
        self._lock = None
        return self.final

    def abandon(self) -> None:
        """After the files were deleted: removes the empty staging folder and drops the lock."""
        with contextlib.suppress(OSError):
            self.staging.rmdir()
        release(self._lock)
        self._lock = None
