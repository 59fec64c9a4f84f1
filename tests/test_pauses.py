"""Pause splicing and the learning-rate schedule of stage 2 (tools/training/pauses.py, ldm_stage)."""

import math

import pytest
import torch

from tools.training.common import learning_rate_factor  # noqa: E402
from tools.training.pauses import add_pauses, splice_with_pause  # noqa: E402

MEL_PER_FRAME = 100 / 30


def utterance(subject: str, n_frames: int, value: float) -> dict:
    """Speech in the middle, quiet (-13.8) for the first and last 0.2 s, like the dataset."""
    columns = math.floor(n_frames * MEL_PER_FRAME)
    mel = torch.full((8, columns), value)
    mel[:, :20] = -13.8
    mel[:, -20:] = -13.8
    z = torch.arange(n_frames, dtype=torch.float32)[:, None].repeat(1, 4) + value * 1000
    return {"subject": subject, "n_frames": n_frames, "z_motion": z, "z_wrinkle": -z, "audio": mel}


def test_splice_keeps_both_utterances_aligned_and_holds_the_rest_pose_in_the_gap():
    first, second = utterance("S00", 60, 1.0), utterance("S00", 45, 2.0)
    spliced = splice_with_pause(first, second, 30, MEL_PER_FRAME, torch.Generator().manual_seed(0))
    assert spliced["n_frames"] == 135
    assert torch.equal(spliced["z_motion"][:60], first["z_motion"])
    assert torch.equal(spliced["z_motion"][60:90], first["z_motion"][59:60].expand(30, 4))
    assert torch.equal(spliced["z_motion"][90:], second["z_motion"])
    assert torch.equal(spliced["z_wrinkle"][90:], second["z_wrinkle"])
    mel = spliced["audio"]
    # The second utterance's mel starts at the time of its first frame (within half a column).
    second_start = mel.shape[1] - second["audio"].shape[1]
    assert abs(second_start - 90 * MEL_PER_FRAME) <= 0.5
    assert torch.equal(mel[:, second_start:], second["audio"])
    # The gap is the first utterance's own silence, not speech.
    gap = mel[:, math.floor(60 * MEL_PER_FRAME) : second_start]
    assert gap.shape[1] >= 99 and bool((gap == -13.8).all())


def test_splice_of_frame_aligned_features_repeats_the_last_frame():
    first, second = utterance("S01", 10, 1.0), utterance("S01", 5, 2.0)
    first["audio"], second["audio"] = torch.randn(10, 3), torch.randn(5, 3)
    spliced = splice_with_pause(first, second, 4, None, torch.Generator())
    assert spliced["audio"].shape == (19, 3)
    assert torch.equal(spliced["audio"][10:14], first["audio"][9:10].expand(4, 3))


def test_add_pauses_replaces_windows_by_ones_crossing_a_gap_of_the_same_subject():
    pool = [utterance("S00", 60, 1.0), utterance("S01", 70, 2.0), utterance("S00", 80, 3.0)]
    by_subject = {"S00": [0, 2], "S01": [1]}
    generator = torch.Generator().manual_seed(5)
    length = 50
    for _ in range(40):
        items, starts = add_pauses([pool[0], pool[1]], [3, 7], length, pool, by_subject,
                                   {"probability": 1.0, "min_seconds": 0.5, "max_seconds": 1.0}, 30, MEL_PER_FRAME, generator)
        for item, start, original in zip(items, starts, [pool[0], pool[1]]):
            assert item is not original and item["subject"] == original["subject"]
            n_first = original["n_frames"]
            assert 0 <= start <= item["n_frames"] - length
            held = (item["z_motion"][n_first:] == original["z_motion"][-1]).all(dim=1).long()
            gap = int(held.cumprod(0).sum())  # frames holding the rest pose after the first utterance
            assert 15 <= gap <= 30
            assert start < n_first + gap and start + length > n_first  # the window crosses the gap
            assert item["z_motion"].shape[0] == item["n_frames"] >= n_first + 15 + 60
    unchanged = add_pauses([pool[0]], [3], length, pool, by_subject, {"probability": 0.0}, 30, MEL_PER_FRAME, generator)
    assert unchanged[0][0] is pool[0] and unchanged[1] == [3]


def with_blink(item: dict, seed: int) -> dict:
    return {**item, "blink": torch.rand(item["n_frames"], generator=torch.Generator().manual_seed(seed))}


def test_splice_carries_the_blink_track_and_holds_the_last_closure_in_the_gap():
    first, second = with_blink(utterance("S00", 60, 1.0), 1), with_blink(utterance("S00", 45, 2.0), 2)
    first["blink"][-1] = 0.75  # eyes half closed at the end of the first utterance
    for mel_per_frame in (MEL_PER_FRAME, None):
        if mel_per_frame is None:
            first["audio"], second["audio"] = torch.randn(60, 3), torch.randn(45, 3)
        spliced = splice_with_pause(first, second, 30, mel_per_frame, torch.Generator().manual_seed(0))
        blink = spliced["blink"]
        assert blink.shape == (spliced["n_frames"],) == (60 + 30 + 45,)
        assert torch.equal(blink[:60], first["blink"])
        assert torch.equal(blink[60:90], torch.full((30,), 0.75))
        assert torch.equal(blink[90:], second["blink"])
    # Items without a track give a spliced item without one.
    assert "blink" not in splice_with_pause(utterance("S00", 10, 1.0), utterance("S00", 5, 2.0), 3, MEL_PER_FRAME,
                                            torch.Generator())


def test_add_pauses_keeps_blink_tracks_aligned_with_the_latents():
    from tools.training.ldm_stage import window_blink

    pool = [with_blink(utterance("S00", 60, 1.0), 1), with_blink(utterance("S00", 80, 3.0), 3)]
    generator = torch.Generator().manual_seed(5)
    items, starts = add_pauses([pool[0]], [3], 50, pool, {"S00": [0, 1]},
                               {"probability": 1.0, "min_seconds": 0.5, "max_seconds": 1.0}, 30, MEL_PER_FRAME, generator)
    item = items[0]
    assert item is not pool[0] and item["blink"].shape == (item["n_frames"],)
    # Where the latents are the first utterance's, so is the track; in the gap both hold.
    held = (item["z_motion"][60:] == pool[0]["z_motion"][-1]).all(dim=1).long()
    gap = int(held.cumprod(0).sum())
    assert gap >= 15
    assert torch.equal(item["blink"][:60], pool[0]["blink"])
    assert bool((item["blink"][60 : 60 + gap] == pool[0]["blink"][-1]).all())
    second = next(p for p in pool if torch.equal(item["z_motion"][60 + gap :], p["z_motion"]))
    assert torch.equal(item["blink"][60 + gap :], second["blink"])
    window = window_blink(items, starts, 50, "cpu")
    assert torch.equal(window[0], item["blink"][starts[0] : starts[0] + 50])


def test_learning_rate_warms_up_holds_then_decays_by_cosine_to_the_final_fraction():
    constant = learning_rate_factor(10, {"start_step": None}, 100)
    assert constant(0) == pytest.approx(0.1) and constant(9) == 1.0 and constant(99) == 1.0
    decayed = learning_rate_factor(10, {"start_step": 50, "final_fraction": 0.1}, 100)
    assert decayed(49) == 1.0
    assert decayed(75) == pytest.approx(0.55)
    assert decayed(100) == pytest.approx(0.1)
    assert all(decayed(s) >= decayed(s + 1) for s in range(50, 100))
