"""Blender side of TexTalker: properties, preferences, operators, panel, writers, API.

Thin by design: it gathers inputs from Blender, calls `core.pipeline.Pipeline`, and writes the
result back (`writers`). Nothing here does maths that `core` could do.
"""

from __future__ import annotations

import atexit

import bpy

from . import operators, panel, preferences, properties

_CLASSES = (
    *preferences.CLASSES,
    *properties.CLASSES,
    *operators.CLASSES,
    *panel.CLASSES,
)
_MESH_ADD_MENU = bpy.types.VIEW3D_MT_mesh_add  # Add > Mesh (looked up once)


def _add_menu_entry(self, context):
    self.layout.operator(operators.TEXTALKER_OT_add_template_head.bl_idname, icon="USER")


def register():
    for cls in _CLASSES:
        bpy.utils.register_class(cls)
    properties.register_properties()
    _MESH_ADD_MENU.append(_add_menu_entry)  # Add > Mesh > Add Template Head
    # The bpy 4.2 module segfaults and 4.5 deadlocks when Python exits with the add-on still
    # registered (a script or tool that never unregisters it; measured: unregistering first
    # avoids both, removing only the menu entry does not). Python runs exit handlers
    # last-registered first, so this one runs before bpy's own, registered at `import bpy`.
    atexit.register(unregister)


def unregister():
    atexit.unregister(unregister)
    _MESH_ADD_MENU.remove(_add_menu_entry)  # Blender ignores an absent one
    properties.unregister_properties()
    for cls in reversed(_CLASSES):
        bpy.utils.unregister_class(cls)
