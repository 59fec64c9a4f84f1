"""One rule per generation argument, shared by the Pipeline, the add-on API, the panel and both
command lines (issue #17: `steps=0` meant "default" in the API but was refused by the core CLI;
`steps=2.5` and `seed=1.5` were silently truncated).

Each check takes what a Python caller passes (a number; text is refused) and returns the clean
value, or raises `ArgumentError` with a message that names the argument, the allowed values and
what was given; the command lines parse their text with `argparse_type`, which applies the same
check to the number typed. `ArgumentError` is both a `TexTalkerError` (the add-on
and the CLIs show it as one line) and a `ValueError` (what Python callers expect of a bad value).

- steps: None (the model's default) or a whole number 1..the model's training steps. 0 is refused
  everywhere; only the panel, whose integer field cannot hold None, shows 0 as "default" and
  passes None.
- seed: a whole number torch's generator accepts (-2**63 .. 2**64 - 1).
- fps: a finite number 1..1000.
- blink rate: `core.blinks.check_rate` (0..120 blinks per minute).
- brow emphasis rate: `core.brows.check_rate` (0..120 per minute of speech).

A float with a whole value (4.0) counts as a whole number; 4.5, True/False, NaN and infinity do
not.
"""

from __future__ import annotations

import math
import numbers

from .errors import TexTalkerError

MIN_SEED = -(2**63)
MAX_SEED = 2**64 - 1
MIN_FPS = 1.0
MAX_FPS = 1000.0


class ArgumentError(TexTalkerError, ValueError):
    """A generation argument outside its rule."""


def whole_number(value) -> int | None:
    """`value` as an int when it is a whole number (an int, or a float with a whole value), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        number = float(value)
        if math.isfinite(number) and number == int(number):
            return int(number)
    return None


def check_steps(value, max_steps: int | None = None, default: int | None = None) -> int | None:
    """Sampler steps: None stays None (the model's default); otherwise a whole number from 1 to
    `max_steps` (None: no upper bound known yet, e.g. before the weights are read)."""
    if value is None:
        return None
    steps = whole_number(value)
    top = f" to {max_steps}" if max_steps is not None else " or more"
    if steps is None or steps < 1 or (max_steps is not None and steps > max_steps):
        hint = f" (the model's default is {default})" if default is not None else ""
        raise ArgumentError(
            f"steps must be a whole number from 1{top}, or left unset for the model's default{hint}; "
            f"not {value!r}"
        )
    return steps


def check_steps_within(steps: int | None, max_steps: int, default: int | None = None) -> int | None:
    """Already-checked steps (a whole number >= 1, or None) against a model's number of diffusion
    steps, which only the loaded weights know."""
    if steps is not None and steps > max_steps:
        hint = f" (the model's default is {default})" if default is not None else ""
        raise ArgumentError(
            f"steps must be a whole number from 1 to {max_steps}, or left unset for the model's default{hint}; "
            f"not {steps!r}"
        )
    return steps


def check_seed(value) -> int:
    """The sampler's seed: a whole number from -2**63 to 2**64 - 1 (what torch accepts)."""
    seed = whole_number(value)
    if seed is None or not MIN_SEED <= seed <= MAX_SEED:
        raise ArgumentError(f"seed must be a whole number (for example 0, 1, 42), not {value!r}")
    return seed


def check_fps(value) -> float:
    """The output frame rate: a finite number from 1 to 1000 frames per second."""
    is_number = isinstance(value, numbers.Real) and not isinstance(value, bool)
    fps = float(value) if is_number else math.nan
    if not (math.isfinite(fps) and MIN_FPS <= fps <= MAX_FPS):
        raise ArgumentError(f"fps must be a number from {MIN_FPS:g} to {MAX_FPS:g}, not {value!r}")
    return fps


def check_blink_rate(value) -> float | None:
    """Blinks per minute: None stays None (the speaking style's own rate), else 0..120."""
    if value is None:
        return None
    from .blinks import check_rate

    try:
        if not isinstance(value, numbers.Real):  # text is refused as numbers.Real: one message
            check_rate(math.nan)
        return check_rate(value)
    except ValueError as exc:
        raise ArgumentError(f"blink_rate: the {str(exc).replace('nan', repr(value))}") from exc


def check_brow_rate(value) -> float | None:
    """Brow emphases per minute of speech: None stays None (the speaking style's own rate), else
    0..120."""
    if value is None:
        return None
    from .brows import check_rate

    try:
        if not isinstance(value, numbers.Real):
            check_rate(math.nan)
        return check_rate(value)
    except ValueError as exc:
        raise ArgumentError(f"brow_rate: the {str(exc).replace('nan', repr(value))}") from exc


def check_lip_seal(value) -> float:
    """Lip seal distance in mm (core/lip_seal.py): decoded lips closer than this, times the
    closure detector's probability, are pressed shut; 0 switches the seal off. A finite number
    from 0 to MAX_SEAL_MM."""
    from .lip_seal import MAX_SEAL_MM

    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) \
            or not 0.0 <= float(value) <= MAX_SEAL_MM:
        raise ArgumentError(f"lip_seal_mm must be a number of millimetres from 0 (off) to {MAX_SEAL_MM:g}, "
                            f"not {value!r}")
    return float(value)


def number_from_text(text: str):
    """A command line's text as an int ("4") or a float ("4.5", "1e3"); the text itself when it
    is no number, so the check reports what was typed."""
    text = text.strip()
    for convert in (int, float):
        try:
            return convert(text)
        except ValueError:
            pass
    return text


def argparse_type(check, *args):
    """`check` as an argparse `type=`: the same rule on the number typed, reported by argparse as
    a one-line usage error."""
    import argparse

    def parse(text: str):
        try:
            return check(number_from_text(text), *args)
        except ArgumentError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    parse.__name__ = check.__name__.replace("check_", "")
    return parse
