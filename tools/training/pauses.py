"""Pause splicing for stage 2: teaches the model that the mouth rests closed in silence.

The synthetic sentences start and end in about 0.2 s of silence with the face at rest, but have
no pauses inside them. Real recordings do (breaths, hesitations, gaps between phrases), and a
model that never heard 0.5-2 s of silence leaves the mouth half open there (docs/REAL_SPEECH.md
measured about 2.5 mm). A spliced training window is built from the end of one training
utterance, a silent gap, and the start of another utterance of the same subject. At both seams
the ground truth is the dataset's own rest pose, so the transitions into and out of the pause
stay natural. During the gap the target is the first utterance's last frame (its rest pose) and
the audio is that utterance's own quietest mel columns (its silence, dither included), so the
log-mel augmentation that runs afterwards adds the same room noise to pause and speech.

Nothing shifts inside either utterance: audio and motion stay aligned frame by frame.
"""

from __future__ import annotations

import torch

DEFAULT_PAUSES = {"probability": 0.0, "min_seconds": 0.3, "max_seconds": 2.0}


def _randint(generator: torch.Generator, low: int, high: int) -> int:
    """Uniform integer in [low, high] (both included)."""
    return low + int(torch.randint(0, high - low + 1, (1,), generator=generator))


def silence_columns(log_mel: torch.Tensor, count: int, generator: torch.Generator, pool: int = 12) -> torch.Tensor:
    """(n_mels, count) columns drawn at random from the `pool` quietest columns of `log_mel`."""
    loudness = log_mel.mean(dim=0)
    quiet = torch.argsort(loudness)[: max(1, min(pool, log_mel.shape[1]))]
    picks = quiet[torch.randint(0, len(quiet), (count,), generator=generator)]
    return log_mel[:, picks]


def splice_with_pause(first: dict, second: dict, gap_frames: int, mel_per_frame: float | None,
                      generator: torch.Generator) -> dict:
    """One cache item: `first`, `gap_frames` frames of silence at rest, then `second`.

    Items hold "z_motion"/"z_wrinkle" (frames, D), optionally "blink" and "lip_gap" (frames,)
    and "brow" (frames, 2),
    and "audio": a log-mel (n_mels, M) at
    `mel_per_frame` columns per frame, or, with `mel_per_frame` None, per-frame features
    (frames, C) (HuBERT cache), whose gap repeats the first utterance's last frame."""
    n_first = int(first["n_frames"])

    def held(z: torch.Tensor) -> torch.Tensor:
        return z[n_first - 1 : n_first].expand(gap_frames, *z.shape[1:])

    spliced = {
        "subject": first["subject"],
        "n_frames": n_first + gap_frames + int(second["n_frames"]),
        "z_motion": torch.cat([first["z_motion"][:n_first], held(first["z_motion"]), second["z_motion"]]),
        "z_wrinkle": torch.cat([first["z_wrinkle"][:n_first], held(first["z_wrinkle"]), second["z_wrinkle"]]),
    }
    for key in ("blink", "lip_gap", "brow"):
        if key in first:
            # Eyelids, lips and brows hold with the rest of the face (the target repeats the last frame).
            spliced[key] = torch.cat([first[key][:n_first], held(first[key]), second[key]])
    if mel_per_frame is None:
        audio = first["audio"]
        spliced["audio"] = torch.cat([audio[:n_first], audio[n_first - 1 : n_first].expand(gap_frames, -1), second["audio"]])
        return spliced
    mel = first["audio"]
    # Mel column j is centred at j / mel_fps s; the second utterance's column 0 must land at the
    # time of its frame 0, (n_first + gap) / fps: rounding leaves at most half a column (5 ms).
    first_columns = min(mel.shape[1], round(n_first * mel_per_frame))
    second_start = round((n_first + gap_frames) * mel_per_frame)
    gap_columns = max(0, second_start - first_columns)
    spliced["audio"] = torch.cat([mel[:, :first_columns], silence_columns(mel, gap_columns, generator), second["audio"]], dim=1)
    return spliced


def over_telephone(item: dict) -> dict:
    """The item with its telephone copy's audio (`audio_phone`, training/lip_closure.py)."""
    return {**item, "audio": item["audio_phone"], "telephone": True}


def add_pauses(items: list[dict], starts: list[int], length: int, pool: list[dict], by_subject: dict[str, list[int]],
               settings: dict, fps: float, mel_per_frame: float | None,
               generator: torch.Generator) -> tuple[list[dict], list[int]]:
    """Replace each window, with the configured probability, by one of the same length that
    crosses a pause between two utterances of its subject. `by_subject` indexes `pool`."""
    settings = {**DEFAULT_PAUSES, **settings}
    probability = float(settings["probability"])
    if probability <= 0:
        return items, starts
    min_gap = max(1, round(float(settings["min_seconds"]) * fps))
    max_gap = max(min_gap, round(float(settings["max_seconds"]) * fps))
    out_items, out_starts = list(items), list(starts)
    for k, item in enumerate(items):
        if float(torch.rand((), generator=generator)) >= probability:
            continue
        candidates = by_subject[item["subject"]]
        second = pool[candidates[_randint(generator, 0, len(candidates) - 1)]]
        if item.get("telephone"):  # one line for the whole window: the second part is on it too
            second = over_telephone(second)
        gap = _randint(generator, min_gap, max_gap)
        spliced = splice_with_pause(item, second, gap, mel_per_frame, generator)
        n_first = int(item["n_frames"])
        # Any window of `length` frames that overlaps the gap.
        low = max(0, n_first - length + 1)
        high = min(n_first + gap - 1, spliced["n_frames"] - length)
        out_items[k] = spliced
        out_starts[k] = _randint(generator, low, max(low, high))
    return out_items, out_starts
