"""Blender side of TexTalker: properties, preferences, operators, panel, writers, API.

Thin by design: it gathers inputs from Blender, calls `core.pipeline.Pipeline`, and writes the
result back (`writers`). Nothing here does maths that `core` could do.
"""

from __future__ import annotations

import bpy

from . import operators, panel, preferences, properties

_CLASSES = (
    *preferences.CLASSES,
    *properties.CLASSES,
    *operators.CLASSES,
    *panel.CLASSES,
)


def register():
    for cls in _CLASSES:
        bpy.utils.register_class(cls)
    properties.register_properties()


def unregister():
    properties.unregister_properties()
    for cls in reversed(_CLASSES):
        bpy.utils.unregister_class(cls)
