"""Scene settings (`scene.textalker`), each object's crease settings (`object.textalker_creases`)
and the running job's state (`window_manager.textalker_job`)."""

from __future__ import annotations

import bpy
from bpy.props import (
    BoolProperty,
    EnumProperty,
    FloatProperty,
    IntProperty,
    PointerProperty,
    StringProperty,
)

from ..core.blinks import DEFAULT_RATE_PER_MIN, MAX_RATE_PER_MIN
from ..core.brows import DEFAULT_RATE_PER_MIN as DEFAULT_BROW_RATE
from ..core.brows import MAX_RATE_PER_MIN as MAX_BROW_RATE
from ..core.lip_seal import DEFAULT_SEAL_MM, MAX_SEAL_MM
from . import catalog, writers
from .preferences import DEVICE_ITEMS

# Blender keeps only pointers to the strings of dynamic enum items: the lists must stay alive.
_style_items_alive: list = []


def style_items(self, context):
    styles = catalog.read_style_names()
    if not styles:
        items = [("NONE", "No styles (weights not found)", "The bundled weights could not be read", 0)]
    else:
        items = [(s.key, s.name, f"Style {s.id}: {s.key}", s.id) for s in styles]
    _style_items_alive[:] = items
    return _style_items_alive


def _mesh_only(self, obj):
    return obj.type == "MESH"


class TexTalkerSettings(bpy.types.PropertyGroup):
    target: PointerProperty(
        name="Target",
        type=bpy.types.Object,
        poll=_mesh_only,
        description="Mesh to animate (empty: the active object)",
    )
    audio_source: EnumProperty(
        name="Audio",
        items=[
            ("STRIP", "Sound Strip", "A sound strip of the scene's Video Sequencer"),
            ("FILE", "File", "An audio file on disk"),
        ],
        default="STRIP",
    )
    sound_strip: StringProperty(
        name="Sound Strip",
        description="Sound strip whose audio drives the face (keys start on its start frame)",
    )
    audio_file: StringProperty(
        name="Audio File",
        subtype="FILE_PATH",
        description="Audio file (wav, flac, mp3, ...); keys start on the scene's start frame",
    )
    speaking_style: EnumProperty(
        name="Speaking Style", items=style_items,
        description="Whose way of moving the mouth and face to imitate",
    )
    wrinkle_style: EnumProperty(
        name="Wrinkle Style", items=style_items,
        # The most lined style, so that wrinkles show before the artist picks one (a dynamic
        # enum's default is the item's number).
        default=catalog.read_default_wrinkle_style(),
        description="Whose skin creasing to imitate (independent of the speaking style)",
    )
    device: EnumProperty(
        name="Device",
        items=[("DEFAULT", "Preferences Default", "The default device set in the add-on preferences")]
        + [(identifier, name, description) for identifier, name, description in DEVICE_ITEMS],
        default="DEFAULT",
    )
    steps: IntProperty(
        name="Sampler Steps", default=0, min=0, max=500,
        description="Denoising steps of the diffusion sampler (0: the model's default)",
    )
    seed: IntProperty(name="Seed", default=0, min=0, description="Random seed of the sampler")
    blinks: EnumProperty(
        name="Blinks",
        items=[
            ("STYLE", "Style's rate", "Blink at the rate measured for the chosen speaking style", 0),
            ("CUSTOM", "Custom rate", "Blink at the rate set below (blinks per minute)", 1),
            ("OFF", "No blinks", "Keep the eyes open", 2),
        ],
        default="STYLE",
        description="How often the eyes blink (weights trained without blink input ignore this)",
    )
    blink_rate: FloatProperty(
        name="Blink Rate", default=DEFAULT_RATE_PER_MIN, min=0.0, soft_max=40.0,
        max=MAX_RATE_PER_MIN,
        description="Blinks per minute, used with the custom rate (people blink about 15 times a "
        "minute while talking)",
    )
    brows: EnumProperty(
        name="Brow Emphasis",
        items=[
            ("STYLE", "Style's rate", "Raise or knit the brows on held syllables as often as the chosen "
             "speaking style does", 0),
            ("CUSTOM", "Custom rate", "Emphasise with the brows at the rate set below (per minute of speech)", 1),
            ("OFF", "No emphasis", "Keep the brows calm (the forehead lines then rarely form)", 2),
        ],
        default="STYLE",
        description="How often the brows rise (or knit) on emphasised syllables, folding the forehead "
        "(weights trained without brow input ignore this)",
    )
    brow_rate: FloatProperty(
        name="Brow Rate", default=DEFAULT_BROW_RATE, min=0.0, soft_max=60.0, max=MAX_BROW_RATE,
        description="Brow emphases per minute of speech, used with the custom rate",
    )
    lip_seal_mm: FloatProperty(
        name="Lip Seal (mm)", default=DEFAULT_SEAL_MM, min=0.0, max=MAX_SEAL_MM, step=10, precision=1,
        description="How far apart the lips may be and still be pressed shut where the model hears a /p b m/ "
        "or a pause (scaled by how sure it is), so closures close firmly (0: show the model's lips as they are)",
    )
    output_mode: EnumProperty(
        name="Output",
        items=[
            ("SHAPE_KEYS", "Per-frame Shape Keys",
             "One shape key per frame: the exact generated motion, heavy and not editable", 0),
            ("ARKIT", "ARKit Curves",
             "52 ARKit blendshape weights with one editable F-curve each: on the template head, or on "
             "the mesh's own ARKit-named shape keys (Faceit, MPFB, VRM / Ready Player Me)", 1),
        ],
        default="SHAPE_KEYS",
    )
    arkit_export_path: StringProperty(
        name="Export ARKit Weights",
        subtype="FILE_PATH",
        description="Also write the weights to this .csv (Live Link Face layout) or .json file "
        "when the generation succeeds (empty: no export)",
    )


def _apply_crease_settings(self, context):
    """Any change reaches the object's wrinkle material at once: no regeneration needed."""
    writers.set_crease_controls(self.id_data, self.strength, self.cavity)


class TexTalkerCreaseSettings(bpy.types.PropertyGroup):
    """How the generated creases render on this object (kept across generations: a new run's
    material takes them). They drive the "TexTalker Wrinkles" group node's inputs."""

    strength: FloatProperty(
        name="Crease Strength", default=writers.DEFAULT_CREASE_STRENGTH, min=0.0,
        max=writers.MAX_CREASE_STRENGTH, soft_max=3.0, update=_apply_crease_settings,
        description="Depth of the wrinkle creases: 1 is the depth the model generates, at the "
        "head's real size; 0 turns the creases off (the colour change stays)",
    )
    cavity: FloatProperty(
        name="Cavity", default=writers.DEFAULT_CAVITY, min=0.0, max=writers.MAX_CAVITY,
        soft_max=1.0, update=_apply_crease_settings,
        description="How much a crease darkens the skin (about this much per millimetre of depth "
        "for thin lines; deep folds darken towards a shadow, never black), so thin lines read "
        "in flat light too (0: shading only)",
    )


class TexTalkerJobState(bpy.types.PropertyGroup):
    """Not saved in files: progress of the generation running in this Blender session."""

    running: BoolProperty(default=False)
    progress: FloatProperty(name="Progress", default=0.0, min=0.0, max=100.0, subtype="PERCENTAGE")
    stage: StringProperty(default="")
    cancel_requested: BoolProperty(default=False)
    last_message: StringProperty(default="")
    # The last successful run's audio warnings (core/audio.py), one per line: shown in the panel.
    last_warnings: StringProperty(default="")


CLASSES = (TexTalkerSettings, TexTalkerCreaseSettings, TexTalkerJobState)


def register_properties():
    bpy.types.Scene.textalker = PointerProperty(type=TexTalkerSettings)
    setattr(bpy.types.Object, writers.CREASE_SETTINGS, PointerProperty(type=TexTalkerCreaseSettings))
    bpy.types.WindowManager.textalker_job = PointerProperty(type=TexTalkerJobState)


def unregister_properties():
    del bpy.types.WindowManager.textalker_job
    del bpy.types.Scene.textalker
    delattr(bpy.types.Object, writers.CREASE_SETTINGS)
