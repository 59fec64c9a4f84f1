"""What one generation is asked for: one object, checked once, from every door to the Pipeline.

The panel (through `blender.api`), the Blender command line, the core command line and Python
callers all build a `GenerationOptions`; its fields are checked by the rules of `arguments.py` when
it is made, and it travels unchanged to `Pipeline.generate`. What only the loaded model knows (its
style names, its number of diffusion steps) is checked by the Pipeline against the model.
"""

from __future__ import annotations

import dataclasses

from . import arguments
from .arguments import ArgumentError
from .lip_seal import DEFAULT_SEAL_MM


def _check_style(value, role: str, default_allowed: bool = False) -> int | str | None:
    """A style is a row of the weights' style table (a whole number >= 0) or its key / name;
    None (where `default_allowed`) is the weights' default style."""
    if value is None and default_allowed:
        return None
    if isinstance(value, str) and value.strip():
        return value
    number = arguments.whole_number(value)
    if number is not None and number >= 0:
        return number
    raise ArgumentError(f"{role} style must be a style number (0, 1, ...) or its name, not {value!r}")


@dataclasses.dataclass(frozen=True)
class GenerationOptions:
    """The choices of one generation (the audio and the target are given beside it)."""

    speaking_style: int | str = 0      # style row or key: how the mouth and face move
    # how the skin creases; None: the weights' default, their most lined style
    # (core.creases.most_lined_style), so that wrinkles show without choosing one
    wrinkle_style: int | str | None = None
    fps: float = 30.0                  # output frames per second (the scene's)
    seed: int = 0                      # the diffusion noise (and the blink and brow timing)
    steps: int | None = None           # DDIM steps; None: the model's default
    blink_rate: float | None = None    # blinks per minute; None: the speaking style's own rate
    brow_rate: float | None = None     # brow emphases per minute of speech; None: the style's own
    # near-closures of the lips pressed shut below this gap (mm; 0: off; core/lip_seal.py)
    lip_seal_mm: float = DEFAULT_SEAL_MM

    def __post_init__(self) -> None:
        checked = {
            "speaking_style": _check_style(self.speaking_style, "speaking"),
            "wrinkle_style": _check_style(self.wrinkle_style, "wrinkle", default_allowed=True),
            "fps": arguments.check_fps(self.fps),
            "seed": arguments.check_seed(self.seed),
            "steps": arguments.check_steps(self.steps),
            "blink_rate": arguments.check_blink_rate(self.blink_rate),
            "brow_rate": arguments.check_brow_rate(self.brow_rate),
            "lip_seal_mm": arguments.check_lip_seal(self.lip_seal_mm),
        }
        for name, value in checked.items():  # frozen: the checked values replace what was given
            object.__setattr__(self, name, value)

    def replace(self, **changes) -> GenerationOptions:
        """A copy with some fields changed (checked again, as any new options are)."""
        unknown = set(changes) - {field.name for field in dataclasses.fields(self)}
        if unknown:
            raise TypeError(f"unknown generation option(s): {', '.join(sorted(unknown))}")
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_values(cls, options: GenerationOptions | None = None, **changes) -> GenerationOptions:
        """`options` (or the defaults) with `changes` applied; keyword callers end up here."""
        base = options if options is not None else cls()
        if not isinstance(base, GenerationOptions):
            raise TypeError(f"options must be GenerationOptions, not {type(base).__name__}")
        return base.replace(**changes) if changes else base
