"""The few Blender API differences between 4.2 LTS and 5.3, in one place.

The add-on supports every Blender from 4.2 to 5.3 (bpy modules measured with
`tools/compat_matrix.py`, results in `docs/COMPATIBILITY.md`). Where the API differs, the rest of
`blender/` calls the function here instead of the attribute. Each function detects the feature by
its attribute, not by `bpy.app.version`: a feature back-ported to a point release, or a build
without it, is then handled too.

| what | 4.2 | 4.4 / 4.5 | 5.0 and later |
| --- | --- | --- | --- |
| node tree of `materials.new()` / `worlds.new()` | none until `use_nodes = True` | same | made at once (`use_nodes` deprecated) |
| sequencer collections | `sequences`, `sequences_all`, `bpy.types.Sequence` | both names | `strips`, `strips_all`, `bpy.types.Strip` |
| action curves | `action.fcurves` | slotted: `layers` / `channelbags`, `fcurve_ensure_for_datablock` | slotted only |
| where a strip's content starts | `frame_start` | same | `content_start` from 5.1 (`frame_start` warns: removed in 6.0) |
"""

from __future__ import annotations

import bpy

# --------------------------------------------------------------------------------------------
# Materials and worlds


def ensure_node_tree(datablock):
    """The shader node tree of a material or world, made if the datablock has none yet.

    Before Blender 5.0 `bpy.data.materials.new()` and `worlds.new()` return a datablock without
    a tree (`use_nodes` False); setting `use_nodes` makes the default one (Principled BSDF +
    Material Output, or Background + World Output). 5.x makes the tree at once and deprecates
    `use_nodes`, so it is only touched when the tree is missing.
    """
    if datablock.node_tree is None:
        datablock.use_nodes = True
    return datablock.node_tree


def new_material(name: str) -> bpy.types.Material:
    """A new material with the default node tree (Principled BSDF into Material Output)."""
    material = bpy.data.materials.new(name)
    ensure_node_tree(material)
    return material


def new_world(name: str) -> bpy.types.World:
    """A new world with the default node tree (Background into World Output)."""
    world = bpy.data.worlds.new(name)
    ensure_node_tree(world)
    return world


# --------------------------------------------------------------------------------------------
# Sequencer ("sequences" before 4.4's rename, "strips" after; 4.5 has both, 5.0 only "strips")

# The RNA type of every strip: `Strip` from 4.4, `Sequence` before.
STRIP_TYPE = getattr(bpy.types, "Strip", None) or bpy.types.Sequence


def strips_all_name(editor) -> str:
    """Name of the editor's collection of every strip (meta strips' contents too), for
    `UILayout.prop_search`."""
    return "strips_all" if hasattr(editor, "strips_all") else "sequences_all"


def all_strips(editor):
    """Every strip of a SequenceEditor, including those inside meta strips."""
    return getattr(editor, strips_all_name(editor))


def top_level_strips(editor):
    """The editor's top-level strip collection (the one with `new_sound`, `new_image`, ...)."""
    return editor.strips if hasattr(editor, "strips") else editor.sequences


def new_sound_strip(scene: bpy.types.Scene, name: str, filepath: str, channel: int, frame_start: int):
    """A sound strip on `scene`'s sequencer (made if missing).

    Raises RuntimeError where this Blender has no sound support (the bpy 4.2 module is built
    without Audaspace); `has_sound_support()` says so beforehand."""
    editor = scene.sequence_editor_create()
    return top_level_strips(editor).new_sound(name, filepath, channel, frame_start)


def is_strip(value) -> bool:
    return isinstance(value, STRIP_TYPE)


def strip_content_start(strip) -> float:
    """Timeline frame where the strip's source begins (before trimming).

    `content_start` from Blender 5.1, where `frame_start` warns that it goes away in 6.0."""
    if "content_start" in strip.bl_rna.properties:
        return strip.content_start
    return strip.frame_start


def has_sound_support() -> bool:
    """Whether this Blender can load sounds (sound strips). The bpy 4.2 module from PyPI is built
    without Audaspace; full Blender always has it."""
    options = bpy.app.build_options
    return bool(getattr(options, "audaspace", True))


# --------------------------------------------------------------------------------------------
# Actions: slotted (layers, slots, channelbags) from Blender 4.4, `action.fcurves` before


def _is_slotted(action: bpy.types.Action) -> bool:
    return hasattr(action, "fcurve_ensure_for_datablock")


def ensure_fcurve(action: bpy.types.Action, datablock, data_path: str, index: int = 0):
    """The F-curve of `data_path` animating `datablock` through `action` (made if missing).

    `datablock` must already use `action` (its `animation_data.action`): with slotted actions
    the curve goes in the channelbag of the datablock's slot."""
    if _is_slotted(action):
        return action.fcurve_ensure_for_datablock(datablock, data_path, index=index)
    return action.fcurves.find(data_path, index=index) or action.fcurves.new(data_path, index=index)


def action_curves(action: bpy.types.Action, datablock=None):
    """(collection, curve) pairs of the curves in `action` that animate `datablock` (every curve
    when `datablock` is None or has no slot); `collection.remove(curve)` deletes one."""
    if not _is_slotted(action) or not hasattr(action, "layers"):
        return [(action.fcurves, curve) for curve in action.fcurves]
    animation = getattr(datablock, "animation_data", None) if datablock is not None else None
    slot = animation.action_slot if animation is not None else None
    pairs = []
    for layer in action.layers:
        for strip in layer.strips:
            for bag in strip.channelbags:
                if slot is None or bag.slot == slot:
                    pairs.extend((bag.fcurves, curve) for curve in bag.fcurves)
    return pairs
