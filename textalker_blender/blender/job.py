"""The modal operator's background job: the model in a worker thread, the EXR files written by the
main thread's timer as the chunks arrive, and cancelling running jobs when Blender quits."""

from __future__ import annotations

import atexit
import queue
import threading
import time
import weakref
from dataclasses import dataclass, field

import numpy as np

from .generation import compute_streamed
from .outputs import SequenceWriter
from .results import GenerationRequest

# --------------------------------------------------------------------------------------------
# Background job for the modal operator

# Chunks of wrinkle maps the worker may queue before it waits for the main thread to write them
# (each ~25 MB for the template head): memory stays bounded even when the UI is slow to poll.
MAX_QUEUED_CHUNKS = 2
# Seconds `write_pending` spends writing EXR files per timer event by default, so the UI stays
# responsive while a long clip streams (~2 ms per 128x128 file).
WRITE_BUDGET_S = 0.1


@dataclass
class GenerationJob:
    """Runs `compute_streamed` in a daemon thread; the main thread polls `poll_progress`, writes
    the queued wrinkle maps with `write_pending` and applies the result when `done`.

    The worker hands each chunk's maps over through a small bounded queue (it waits while the
    queue is full, and stops waiting when cancelled), so at most MAX_QUEUED_CHUNKS chunks are in
    memory whatever the clip's length. After a cancel or an error, `discard_output` deletes the
    files written so far."""

    request: GenerationRequest
    cancel_event: threading.Event = field(default_factory=threading.Event)
    result: object = None
    error: BaseException | None = None
    compute_s: float = 0.0
    _progress: queue.SimpleQueue = field(default_factory=queue.SimpleQueue)
    _maps: queue.Queue = field(default_factory=lambda: queue.Queue(maxsize=MAX_QUEUED_CHUNKS))
    _writing: list = field(default_factory=list)  # [first frame, maps, frames done, n_frames, folds]
    _writer: SequenceWriter | None = None
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._writer = SequenceWriter(self.request.sequence_folder)
        self._thread = threading.Thread(target=self._run, name="TexTalker generation", daemon=True)
        _RUNNING_JOBS.add(self)
        self._thread.start()

    def _run(self) -> None:
        started = time.perf_counter()
        try:
            self.result = compute_streamed(
                self.request,
                self._hand_over,
                progress=lambda fraction, stage: self._progress.put((float(fraction), str(stage))),
                cancel=self.cancel_event,
            )
        except BaseException as error:  # reported on the main thread
            self.error = error
        self.compute_s = time.perf_counter() - started
        _RUNNING_JOBS.discard(self)

    def _hand_over(self, first_frame: int, maps: np.ndarray, n_frames: int, folds: np.ndarray | None = None) -> None:
        """Worker thread: queues a chunk's maps (and fold maps, None for weights without them)
        for the main thread; waits while the queue is full."""
        while True:
            if self.cancel_event.is_set():
                from ..core.errors import Cancelled

                raise Cancelled("Generation cancelled.")
            try:
                self._maps.put((first_frame, maps, n_frames, folds), timeout=0.1)
                return
            except queue.Full:
                continue

    def write_pending(self, budget_s: float | None = WRITE_BUDGET_S) -> int:
        """Main thread: writes queued maps to the EXR sequence for about `budget_s` seconds
        (None: everything queued); returns the frames written. Raises what the writer raises
        (the files are then already deleted)."""
        deadline = None if budget_s is None else time.perf_counter() + budget_s
        written = 0
        while deadline is None or time.perf_counter() < deadline:
            if not self._writing:
                try:
                    first, maps, n_frames, folds = self._maps.get_nowait()
                except queue.Empty:
                    break
                self._writing = [first, maps, 0, n_frames, folds]
            first, maps, done, n_frames, folds = self._writing
            # A few files at a time, so the budget is kept even with large chunks.
            step = len(maps) - done if deadline is None else min(len(maps) - done, 16)
            self._writer.write(first + done, maps[done : done + step], n_frames,
                               None if folds is None else folds[done : done + step])
            written += step
            done += step
            self._writing = [] if done >= len(maps) else [first, maps, done, n_frames, folds]
        return written

    def discard_output(self) -> int:
        """Deletes the EXR files this job wrote and forgets the queued maps (main thread)."""
        self._writing = []
        while True:
            try:
                self._maps.get_nowait()
            except queue.Empty:
                break
        return self._writer.discard() if self._writer is not None else 0

    def poll_progress(self) -> tuple[float, str] | None:
        """Latest (fraction, stage) since the last call, or None."""
        latest = None
        while True:
            try:
                latest = self._progress.get_nowait()
            except queue.Empty:
                return latest

    @property
    def done(self) -> bool:
        return self._thread is not None and not self._thread.is_alive()

    def cancel(self) -> None:
        self.cancel_event.set()

    def wait(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    __hash__ = object.__hash__  # kept in a WeakSet (dataclass equality would disable hashing)


# Jobs whose worker thread is running. When Blender quits, they are cancelled and given a moment
# to stop at their next check, so the interpreter does not finalise under a running model.
_RUNNING_JOBS: "weakref.WeakSet[GenerationJob]" = weakref.WeakSet()
EXIT_WAIT_S = 5.0


def cancel_running_jobs(wait_s: float = EXIT_WAIT_S) -> int:
    """Cancels every running job, waits up to `wait_s` in all for them to stop and deletes the
    EXR files they had written; returns how many were running."""
    jobs = list(_RUNNING_JOBS)
    for job in jobs:
        job.cancel()
    deadline = time.monotonic() + wait_s
    for job in jobs:
        job.wait(max(0.0, deadline - time.monotonic()))
    for job in jobs:
        try:
            job.discard_output()
        except OSError:
            pass  # at exit: nothing left to tell the user
    return len(jobs)


atexit.register(cancel_running_jobs)
