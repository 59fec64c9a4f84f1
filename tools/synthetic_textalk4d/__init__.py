"""Synthetic TexTalk4D: a dataset with the structure of TexTalk4D (audio, 3D face motion on a
fixed template, dynamic wrinkle textures, per-subject styles) built from offline ingredients:
flite speech, MakeHuman identities, ARKit face units driven by phoneme timings, and wrinkles
from the surface strain. See docs/DATASET.md.

Not TexTalk4D: numbers measured on it are not comparable with the paper's.
"""
from .reader import Sample, SyntheticTextalk4D

__all__ = ["Sample", "SyntheticTextalk4D"]
