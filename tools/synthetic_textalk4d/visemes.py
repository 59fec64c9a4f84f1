"""Phonemes (flite's US phone set) -> visemes -> ARKit face-unit targets and dominances.

Each viseme gives a *target* for the mouth units and a *dominance* per unit: how strongly the
segment holds that unit against its neighbours (Cohen & Massaro 1993). Bilabial closure and the
jaw of open vowels dominate; lip rounding during /t/ or /k/ does not, so it is taken from the
neighbouring vowels (anticipatory rounding in "two").
"""
from __future__ import annotations

import numpy as np

# The 52 ARKit blend-shape names (alphabetical; datasets store their own order in meta.json).
ARKIT_UNITS = (
    "browDownLeft", "browDownRight", "browInnerUp", "browOuterUpLeft", "browOuterUpRight",
    "cheekPuff", "cheekSquintLeft", "cheekSquintRight", "eyeBlinkLeft", "eyeBlinkRight",
    "eyeLookDownLeft", "eyeLookDownRight", "eyeLookInLeft", "eyeLookInRight", "eyeLookOutLeft",
    "eyeLookOutRight", "eyeLookUpLeft", "eyeLookUpRight", "eyeSquintLeft", "eyeSquintRight",
    "eyeWideLeft", "eyeWideRight", "jawForward", "jawLeft", "jawOpen", "jawRight", "mouthClose",
    "mouthDimpleLeft", "mouthDimpleRight", "mouthFrownLeft", "mouthFrownRight", "mouthFunnel",
    "mouthLeft", "mouthLowerDownLeft", "mouthLowerDownRight", "mouthPressLeft", "mouthPressRight",
    "mouthPucker", "mouthRight", "mouthRollLower", "mouthRollUpper", "mouthShrugLower",
    "mouthShrugUpper", "mouthSmileLeft", "mouthSmileRight", "mouthStretchLeft",
    "mouthStretchRight", "mouthUpperUpLeft", "mouthUpperUpRight", "noseSneerLeft",
    "noseSneerRight", "tongueOut",
)
assert len(ARKIT_UNITS) == 52 and len(set(ARKIT_UNITS)) == 52
UNIT_INDEX = {name: i for i, name in enumerate(ARKIT_UNITS)}

# Articulatory parameters blended by coarticulation. Left/right units are driven symmetrically
# here; the subject's asymmetry splits them afterwards.
# `lipClosure` is not an ARKit unit: it is the fraction of the lip gap that is closed. ARKit's
# mouthClose closes the lips *against the open jaw*, so the weight that shuts the lips depends on
# jawOpen; motion.py converts lipClosure into mouthClose with the template's lip-gap model.
ARTICULATORS = (
    "jawOpen", "lipClosure", "mouthPress", "mouthPucker", "mouthFunnel", "mouthStretch",
    "mouthSmile", "mouthRollLower", "mouthRollUpper", "mouthUpperUp", "mouthLowerDown",
    "mouthShrugUpper", "tongueOut",
)
ART_INDEX = {name: i for i, name in enumerate(ARTICULATORS)}
# articulator -> ARKit units it drives
ARTICULATOR_UNITS = {
    "jawOpen": ("jawOpen",), "lipClosure": (),
    "mouthPress": ("mouthPressLeft", "mouthPressRight"), "mouthPucker": ("mouthPucker",),
    "mouthFunnel": ("mouthFunnel",), "mouthStretch": ("mouthStretchLeft", "mouthStretchRight"),
    "mouthSmile": ("mouthSmileLeft", "mouthSmileRight"), "mouthRollLower": ("mouthRollLower",),
    "mouthRollUpper": ("mouthRollUpper",),
    "mouthUpperUp": ("mouthUpperUpLeft", "mouthUpperUpRight"),
    "mouthLowerDown": ("mouthLowerDownLeft", "mouthLowerDownRight"),
    "mouthShrugUpper": ("mouthShrugUpper",), "tongueOut": ("tongueOut",),
}

# flite US phones -> viseme class. Diphthongs are split into two targets (see DIPHTHONGS).
PHONEME_TO_VISEME = {
    "pau": "sil", "h#": "sil", "brth": "sil",
    "p": "PP", "b": "PP", "m": "PP",
    "f": "FF", "v": "FF",
    "th": "TH", "dh": "TH",
    "t": "DD", "d": "DD", "n": "DD", "l": "DD",
    "k": "KK", "g": "KK", "ng": "KK", "hh": "HH",
    "ch": "CH", "jh": "CH", "sh": "CH", "zh": "CH",
    "s": "SS", "z": "SS",
    "r": "RR", "er": "ER", "axr": "ER",
    "w": "WW", "y": "IY",
    "aa": "AA", "ae": "AE", "ah": "AH", "ax": "AX", "ao": "AO",
    "eh": "EH", "ih": "IH", "iy": "IY", "uh": "UH", "uw": "UW",
    "ey": "EY", "ay": "AY", "aw": "AW", "oy": "OY", "ow": "OW",
}
OPEN_VOWELS = frozenset({"aa", "ae", "ah", "ao"})
BILABIALS = frozenset({"p", "b", "m"})
VOWELS = frozenset({"aa", "ae", "ah", "ax", "ao", "eh", "ih", "iy", "uh", "uw", "ey", "ay", "aw",
                    "oy", "ow", "er", "axr"})
# "axr" is in flite's phone set but its US lexicon writes "er": it never occurs.
ALL_PHONEMES = tuple(sorted(p for p in PHONEME_TO_VISEME if p not in ("h#", "brth", "axr")))

# Labels for other languages' sounds whose nearest US phone would give the wrong mouth
# (phonesets.py maps every voice's phones into this inventory). Not in ALL_PHONEMES, which lists
# what the English flite data must cover.
EXTENSION_PHONEMES = {
    "rr": "DD",   # alveolar tap/trill (Spanish, Italian, Russian r): tongue tip, lips not rounded
    "rx": "KK",   # uvular r (French, German): back of the tongue, lips not rounded
    "x": "KK",    # velar/uvular/palatal fricative (German "ach"/"ich", Spanish j, Russian x)
    "uy": "UW",   # close front rounded vowel (German ü, French u, Finnish y): lips rounded
    "oe": "UH",   # mid front rounded vowel (German ö, French eu): lips rounded, jaw mid
    "oh": "OH",   # pure close-mid o (Spanish, Italian, Czech): rounded, jaw between ax and ao
}
PHONEME_TO_VISEME.update(EXTENSION_PHONEMES)
VOWELS = VOWELS | frozenset({"uy", "oe", "oh"})

# Diphthongs: two sub-targets, the first holding this fraction of the duration.
DIPHTHONGS = {"AY": ("AA", "IY", 0.55), "AW": ("AA", "UW", 0.55), "OY": ("AO", "IY", 0.5),
              "OW": ("AO", "UW", 0.5), "EY": ("EH", "IY", 0.5)}

# Viseme targets (articulator -> value in [0, 1]); unspecified articulators target 0.
VISEME_TARGETS = {
    "sil": {},
    "PP": {"lipClosure": 1.0, "mouthPress": 0.55, "jawOpen": 0.08, "mouthRollUpper": 0.1,
           "mouthRollLower": 0.1},
    "FF": {"lipClosure": 0.6, "mouthRollLower": 0.6, "mouthUpperUp": 0.35, "jawOpen": 0.1},
    "TH": {"jawOpen": 0.16, "tongueOut": 0.25, "mouthUpperUp": 0.1},
    "DD": {"jawOpen": 0.2, "mouthStretch": 0.12},
    "KK": {"jawOpen": 0.26, "mouthStretch": 0.08},
    "HH": {"jawOpen": 0.3},
    "CH": {"mouthFunnel": 0.55, "mouthPucker": 0.3, "jawOpen": 0.14, "mouthUpperUp": 0.2,
           "mouthShrugUpper": 0.15},
    "SS": {"mouthStretch": 0.35, "mouthSmile": 0.12, "jawOpen": 0.08},
    "RR": {"mouthPucker": 0.4, "mouthFunnel": 0.3, "jawOpen": 0.14},
    "ER": {"mouthPucker": 0.3, "mouthFunnel": 0.35, "jawOpen": 0.24},
    "WW": {"mouthPucker": 0.85, "mouthFunnel": 0.35, "jawOpen": 0.08},
    "AA": {"jawOpen": 0.72, "mouthLowerDown": 0.25},
    "AE": {"jawOpen": 0.58, "mouthStretch": 0.3, "mouthLowerDown": 0.2, "mouthUpperUp": 0.1},
    "AH": {"jawOpen": 0.5, "mouthLowerDown": 0.15},
    "AO": {"jawOpen": 0.6, "mouthFunnel": 0.35, "mouthPucker": 0.1},
    "AX": {"jawOpen": 0.3},
    "EH": {"jawOpen": 0.38, "mouthStretch": 0.25},
    "IH": {"jawOpen": 0.2, "mouthSmile": 0.25, "mouthStretch": 0.25},
    "IY": {"jawOpen": 0.12, "mouthSmile": 0.45, "mouthStretch": 0.45},
    "UH": {"jawOpen": 0.25, "mouthPucker": 0.4, "mouthFunnel": 0.3},
    "UW": {"jawOpen": 0.12, "mouthPucker": 0.8, "mouthFunnel": 0.5},
    "OH": {"jawOpen": 0.4, "mouthFunnel": 0.45, "mouthPucker": 0.35},   # only EXTENSION_PHONEMES
}

# Dominance per viseme: (default for all articulators, overrides). High = the segment holds the
# articulator against coarticulation from its neighbours.
VISEME_DOMINANCE = {
    "sil": (0.5, {}),
    "PP": (0.4, {"lipClosure": 4.0, "mouthPress": 30.0, "jawOpen": 12.0, "mouthRollUpper": 3.0,
                 "mouthRollLower": 3.0, "mouthLowerDown": 30.0}),
    "FF": (0.4, {"mouthRollLower": 20.0, "mouthUpperUp": 12.0, "jawOpen": 12.0, "lipClosure": 3.0}),
    "TH": (0.3, {"tongueOut": 4.0, "jawOpen": 1.0}),
    "DD": (0.25, {"jawOpen": 0.8}),
    "KK": (0.25, {"jawOpen": 0.8}),
    "HH": (0.1, {}),
    "CH": (0.6, {"mouthFunnel": 3.0, "mouthPucker": 2.0}),
    "SS": (0.4, {"mouthStretch": 1.5, "jawOpen": 1.5}),
    "RR": (0.6, {"mouthPucker": 2.0}),
    "ER": (0.8, {}),
    "WW": (0.8, {"mouthPucker": 4.0, "mouthFunnel": 2.0}),
    "AA": (1.0, {"lipClosure": 3.0, "jawOpen": 3.0}), "AE": (1.0, {"lipClosure": 3.0, "jawOpen": 3.0}), "AH": (1.0, {"lipClosure": 3.0, "jawOpen": 2.5}),
    "AO": (1.0, {"lipClosure": 3.0, "jawOpen": 3.0}), "AX": (0.6, {}),
    "EH": (1.0, {}), "IH": (0.8, {}), "IY": (1.0, {"mouthSmile": 2.0, "mouthStretch": 2.0}),
    "UH": (1.0, {}), "UW": (1.0, {"mouthPucker": 3.0, "mouthFunnel": 2.0}),
    "OH": (1.0, {"lipClosure": 3.0, "jawOpen": 2.5, "mouthPucker": 2.0}),
}
# Closures must be visible at 30 fps: closure segments are widened to at least this duration.
MIN_CLOSURE_S = 0.05
CLOSURE_VISEMES = frozenset({"PP", "FF"})


def target_vector(viseme: str) -> np.ndarray:
    vector = np.zeros(len(ARTICULATORS), np.float64)
    for name, value in VISEME_TARGETS[viseme].items():
        vector[ART_INDEX[name]] = value
    return vector


def dominance_vector(viseme: str) -> np.ndarray:
    default, overrides = VISEME_DOMINANCE[viseme]
    vector = np.full(len(ARTICULATORS), default, np.float64)
    for name, value in overrides.items():
        vector[ART_INDEX[name]] = value
    return vector


def viseme_of(phoneme: str) -> str:
    return PHONEME_TO_VISEME.get(phoneme, "sil")
