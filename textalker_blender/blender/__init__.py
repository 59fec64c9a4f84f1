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


def _add_menu_entry(self, context):
    self.layout.operator(operators.TEXTALKER_OT_add_template_head.bl_idname, icon="USER")


def register():
    for cls in _CLASSES:
        bpy.utils.register_class(cls)
    properties.register_properties()
    bpy.types.VIEW3D_MT_mesh_add.append(_add_menu_entry)  # Add > Mesh > Add Template Head


def unregister():
    bpy.types.VIEW3D_MT_mesh_add.remove(_add_menu_entry)
    properties.unregister_properties()
    for cls in reversed(_CLASSES):
        bpy.utils.unregister_class(cls)
