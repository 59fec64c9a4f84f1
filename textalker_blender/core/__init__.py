"""TexTalker core: numpy and torch only, never bpy (tested and run outside Blender)."""
