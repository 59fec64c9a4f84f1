"""Blender side of TexTalker: properties, preferences, operators, panel, writers, API.

Thin by design: it gathers inputs from Blender, calls `core.pipeline.Pipeline`, and writes the
result back (`writers`). Nothing here does maths that `core` could do.
"""

from __future__ import annotations

import atexit
import threading

import bpy

from . import head_fit_ui, operators, panel, preferences, properties

_CLASSES = (
    *preferences.CLASSES,
    *properties.CLASSES,
    *operators.CLASSES,
    *panel.CLASSES,
    *head_fit_ui.CLASSES,  # after panel: its sub-panel needs the main panel registered
)
_MESH_ADD_MENU = bpy.types.VIEW3D_MT_mesh_add  # Add > Mesh (looked up once)


def _add_menu_entry(self, context):
    self.layout.operator(operators.TEXTALKER_OT_add_template_head.bl_idname, icon="USER")


_registered = False
_exit_hook_armed = False


def _unregister_at_exit():
    if _registered:
        unregister()


def _arm_exit_hook():
    """Unregisters the add-on when the interpreter shuts down, if nothing did before.

    The bpy 4.2 module segfaults and the 4.5 module deadlocks at exit when Python ends with the
    add-on still registered (a script or tool that never unregisters it). Measured on 4.5 after a
    generation: unregistering from an `atexit` handler is too late (it still deadlocks, whatever
    the handler order), unregistering from threading's exit hooks, which run as shutdown begins
    and before any `atexit` handler, works. Python has no public hook at that point, so the
    private `threading._register_atexit` (3.9+, what concurrent.futures uses) is taken where it
    exists, `atexit` otherwise. Full Blender unregisters add-ons before Python ends: then this is a
    no-op."""
    global _exit_hook_armed
    if _exit_hook_armed:
        return
    register_early = getattr(threading, "_register_atexit", None)
    try:
        (register_early or atexit.register)(_unregister_at_exit)
    except RuntimeError:  # registering while the interpreter already shuts down
        atexit.register(_unregister_at_exit)
    _exit_hook_armed = True


def register():
    global _registered
    for cls in _CLASSES:
        bpy.utils.register_class(cls)
    properties.register_properties()
    _MESH_ADD_MENU.append(_add_menu_entry)  # Add > Mesh > Add Template Head
    _registered = True
    _arm_exit_hook()


def unregister():
    global _registered
    _registered = False
    _MESH_ADD_MENU.remove(_add_menu_entry)  # Blender ignores an absent one
    properties.unregister_properties()
    for cls in reversed(_CLASSES):
        bpy.utils.unregister_class(cls)
