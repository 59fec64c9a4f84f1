"""Exceptions raised by TexTalker.

Every error the user can cause (bad audio, bad weights, missing GPU, cancelled run, unusable mesh)
derives from `TexTalkerError`, so the add-on can catch one type and show its message as is.
Messages are written for a Blender artist, not for a Python developer.
"""

from __future__ import annotations


class TexTalkerError(Exception):
    """Base class of all errors with a message meant for the user."""


class AudioError(TexTalkerError):
    """The audio source is missing, unreadable, empty or otherwise unusable."""


class WeightsError(TexTalkerError):
    """The model weights are missing, tampered with, or do not match the code."""


class DeviceError(TexTalkerError):
    """The requested compute device (for example CUDA) is not available."""


class Cancelled(TexTalkerError):
    """The user cancelled a running generation."""


class MeshError(TexTalkerError):
    """The target mesh cannot be driven (wrong topology, no UVs, ...)."""


class ResourceError(TexTalkerError):
    """Not enough memory or disk space, or the output folder cannot be written."""
