"""Compact per-frame offsets kept between a streamed generation and the Blender writers.

The add-on writes shape keys only once the whole clip is generated (the user's scene must not
change while the model runs, and a cancelled or failed run must leave it as it was), so the
offsets of every frame have to wait somewhere. A `FrameStore` keeps them at half the size of
float32 and only for the points that can move (every other point's offset is exactly zero):
10 minutes at 30 fps of the template head take 0.42 GB instead of the 0.95 GB of float32
(T, V, 3). Half floats keep offsets of a few centimetres to ~10 micrometres (relative 2^-11),
far below the model's error.

    store = FrameStore(n_frames, n_points, movable)
    store.put(chunk.start, chunk.offsets)          # (n, N, 3) float32, any order of chunks
    for start, offsets in store.blocks(256):       # float32 (n, N, 3), zero where not movable
        ...

The values live in blocks of BLOCK_FRAMES frames, so a reader that writes them away can let
each block go as soon as it is read (`release_after_reading`): the shape keys then grow while
the store shrinks, and the two are never both whole in memory.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

# Frames per block handed out by `blocks`: a few tens of MB of float32 for the template head.
BLOCK_FRAMES = 256


class FrameStore:
    """(n_frames, n_points, 3) offsets, stored as `dtype` for the `movable` points only."""

    def __init__(
        self,
        n_frames: int,
        n_points: int,
        movable: np.ndarray | None = None,
        dtype=np.float16,
    ):
        if n_frames < 0 or n_points < 0:
            raise ValueError(f"a store needs non-negative sizes, not {n_frames} x {n_points}")
        self.n_frames = int(n_frames)
        self.n_points = int(n_points)
        if movable is None:
            self.movable = None  # every point is stored
            stored = self.n_points
        else:
            movable = np.asarray(movable, dtype=bool)
            if movable.shape != (self.n_points,):
                raise ValueError(f"movable must be ({self.n_points},) bool, not {movable.shape}")
            self.movable = np.flatnonzero(movable)
            stored = len(self.movable)
        self._blocks: list[np.ndarray | None] = [
            np.zeros((min(BLOCK_FRAMES, self.n_frames - start), stored, 3), dtype=dtype)
            for start in range(0, self.n_frames, BLOCK_FRAMES)
        ]
        # Set by a consumer that reads every frame once, in order (the shape-key writer):
        # `blocks` then frees each stored block once it has been handed out.
        self.release_after_reading = False

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.n_frames, self.n_points, 3)

    @property
    def nbytes(self) -> int:
        return sum(int(block.nbytes) for block in self._blocks if block is not None)

    def _spans(self, start: int, stop: int):
        """(block index, slice in the block, slice in [start, stop)) of the blocks overlapping."""
        for index in range(start // BLOCK_FRAMES, (stop - 1) // BLOCK_FRAMES + 1 if stop > start else 0):
            first = index * BLOCK_FRAMES
            lo, hi = max(start, first), min(stop, first + BLOCK_FRAMES)
            yield index, slice(lo - first, hi - first), slice(lo - start, hi - start)

    def _block(self, index: int) -> np.ndarray:
        block = self._blocks[index]
        if block is None:
            raise ValueError("these frames were released after they were read")
        return block

    def __len__(self) -> int:
        return self.n_frames

    def put(self, start: int, offsets: np.ndarray) -> None:
        """Stores frames start .. start + n - 1 from `offsets` (n, n_points, 3)."""
        offsets = np.asarray(offsets)
        if offsets.ndim != 3 or offsets.shape[1:] != (self.n_points, 3):
            raise ValueError(f"offsets must be (n, {self.n_points}, 3), not {offsets.shape}")
        stop = start + len(offsets)
        if start < 0 or stop > self.n_frames:
            raise ValueError(f"frames {start}..{stop - 1} are outside the store's 0..{self.n_frames - 1}")
        values = offsets if self.movable is None else offsets[:, self.movable]
        for index, in_block, in_values in self._spans(start, stop):
            self._block(index)[in_block] = values[in_values]

    def frames(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """float32 (stop - start, n_points, 3): the stored offsets, exactly zero where not movable."""
        stop = self.n_frames if stop is None else min(int(stop), self.n_frames)
        out = np.zeros((max(0, stop - start), self.n_points, 3), np.float32)
        for index, in_block, in_out in self._spans(start, stop):
            values = self._block(index)[in_block]
            if self.movable is None:
                out[in_out] = values
            else:
                out[in_out, self.movable] = values
        return out

    def blocks(self, block_frames: int = BLOCK_FRAMES) -> Iterator[tuple[int, np.ndarray]]:
        """(first frame, float32 offsets of `block_frames` frames or fewer), in order; with
        `release_after_reading`, each stored block is freed once all its frames were handed out."""
        for start in range(0, self.n_frames, block_frames):
            stop = min(self.n_frames, start + block_frames)
            frames = self.frames(start, stop)
            if self.release_after_reading:
                for index in range(start // BLOCK_FRAMES, stop // BLOCK_FRAMES + 1):
                    if index < len(self._blocks) and min(self.n_frames, (index + 1) * BLOCK_FRAMES) <= stop:
                        self._blocks[index] = None
            yield start, frames

    def __array__(self, dtype=None, copy=None):
        """All frames as one float32 array (for code that wants the whole clip at once)."""
        whole = self.frames()
        return whole if dtype is None else whole.astype(dtype)
