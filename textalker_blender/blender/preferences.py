"""Add-on preferences: output folder for unsaved files, local HuBERT checkpoint, default device."""

from __future__ import annotations

import bpy
from bpy.props import EnumProperty, StringProperty

# The add-on's top-level package: "textalker_blender" from a checkout, "bl_ext.<repo>.textalker"
# once installed as an extension. Preferences are registered under that name.
ADDON_PACKAGE = __package__.rpartition(".")[0]

DEVICE_ITEMS = [
    ("AUTO", "Auto", "CUDA when available, else CPU"),
    ("CUDA", "CUDA", "NVIDIA GPU through PyTorch CUDA"),
    ("CPU", "CPU", "Processor only"),
]


class TexTalkerPreferences(bpy.types.AddonPreferences):
    bl_idname = ADDON_PACKAGE

    output_folder: StringProperty(
        name="Output Folder",
        description=(
            "Where wrinkle image sequences go while the .blend file is unsaved "
            "(empty: the system's temporary folder). Saved files write beside the .blend"
        ),
        subtype="DIR_PATH",
        default="",
    )
    hubert_folder: StringProperty(
        name="HuBERT Checkpoint",
        description=(
            "Optional local folder of a HuBERT checkpoint (transformers format) for weights "
            "trained on HuBERT features; nothing is downloaded"
        ),
        subtype="DIR_PATH",
        default="",
    )
    default_device: EnumProperty(
        name="Default Device", items=DEVICE_ITEMS, default="AUTO",
        description="Device new scenes start with",
    )

    def draw(self, context):
        layout = self.layout
        layout.prop(self, "output_folder")
        layout.prop(self, "hubert_folder")
        layout.prop(self, "default_device")


class _Defaults:
    """Preference values when the add-on is registered without the add-on system (tests, scripts)."""

    output_folder = ""
    hubert_folder = ""
    default_device = "AUTO"


def get_preferences(context=None):
    context = context or bpy.context
    addon = context.preferences.addons.get(ADDON_PACKAGE)
    return addon.preferences if addon is not None and addon.preferences is not None else _Defaults()


CLASSES = (TexTalkerPreferences,)
