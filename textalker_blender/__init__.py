# SPDX-License-Identifier: GPL-3.0-or-later
"""TexTalker for Blender: audio-driven 3D talking face with dynamic wrinkle textures.

This file only registers the add-on. The imports are lazy so that `import textalker_blender.core`
works in plain Python without bpy (training, tests, render farms). Inside Blender the package is
installed as `bl_ext.<repository>.textalker`, so code in this package imports its own modules
relatively (`from .core import ...`), never as `textalker_blender`.
"""


def register():
    from .blender import register as register_blender

    register_blender()


def unregister():
    from .blender import unregister as unregister_blender

    unregister_blender()
