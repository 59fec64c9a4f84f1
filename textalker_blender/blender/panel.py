"""3D View sidebar tab "TexTalker": target, audio, styles, device, Advanced, Generate."""

from __future__ import annotations

import bpy

from . import api, compat, writers


class _SidebarTab:
    """Where both panels live: the 3D View sidebar (N), tab "TexTalker"."""

    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "TexTalker"


class TEXTALKER_PT_main(_SidebarTab, bpy.types.Panel):
    bl_label = "TexTalker"
    bl_idname = "TEXTALKER_PT_main"

    def draw(self, context):
        layout = self.layout
        settings = context.scene.textalker
        job = context.window_manager.textalker_job

        layout.operator("textalker.add_template_head", icon="USER")
        column = layout.column()
        column.prop(settings, "target", text="Target")
        if settings.target is None:
            active = context.active_object
            column.label(text=f"Active: {active.name}" if active else "Active: none", icon="OBJECT_DATA")

        box = layout.box()
        box.prop(settings, "audio_source", expand=True)
        if settings.audio_source == "STRIP":
            editor_scene = api.sequencer_scene(context)
            if editor_scene.sequence_editor is not None:
                editor = editor_scene.sequence_editor
                box.prop_search(settings, "sound_strip", editor, compat.strips_all_name(editor),
                                text="Strip", icon="SOUND")
            else:
                box.label(text="The Sequencer has no strips", icon="INFO")
        else:
            box.prop(settings, "audio_file", text="File")

        layout.prop(settings, "speaking_style")
        layout.prop(settings, "wrinkle_style")
        _draw_crease_settings(layout, api.target_object(context))
        layout.prop(settings, "device")
        layout.prop(settings, "output_mode")
        if settings.output_mode == "ARKIT":
            layout.prop(settings, "arkit_export_path", text="Export")

        if job.running:
            row = layout.row(align=True)
            row.label(text=f"{job.stage} {job.progress:.0f}%", icon="TIME")
            row.operator("textalker.cancel", text="Cancel", icon="CANCEL")
            layout.label(text="Press Esc to cancel")
            return
        reason = api.blocking_reason(context)
        row = layout.row()
        row.scale_y = 1.5
        row.enabled = reason is None
        row.operator("textalker.generate", icon="PLAY_SOUND")
        if reason:
            layout.label(text=reason, icon="ERROR")
        if job.last_message:
            layout.label(text=job.last_message, icon="INFO")
        for warning in getattr(job, "last_warnings", "").splitlines():  # the audio's (core/audio.py)
            layout.label(text=warning, icon="ERROR")
        target = api.target_object(context)
        if api.has_output(target):
            timing = api.output_timing(target)
            if timing is not None:
                first, last, fps = timing
                layout.label(text=f"Animation: frames {first}-{last} at {fps:.4g} fps", icon="ACTION")
                if abs(fps - api.scene_fps(context.scene)) > 1e-3:
                    layout.label(text="The scene fps changed: generate again to stay in sync", icon="ERROR")
            layout.operator("textalker.remove_output", icon="TRASH")


def _draw_crease_settings(layout, target) -> None:
    """The target's crease strength and cavity, next to the wrinkle style: they change its
    generated material at once and are what the next generation starts from."""
    if target is None or target.type != "MESH":
        return
    settings = getattr(target, writers.CREASE_SETTINGS, None)
    if settings is None:
        return
    column = layout.column(align=True)
    column.prop(settings, "strength")
    column.prop(settings, "cavity")
    if api.has_output(target) and writers.crease_controls(target) is None:
        column.label(text="This output has no creases (older weights): colour only", icon="INFO")


class TEXTALKER_PT_advanced(_SidebarTab, bpy.types.Panel):
    bl_label = "Advanced"
    bl_idname = "TEXTALKER_PT_advanced"
    bl_parent_id = "TEXTALKER_PT_main"
    bl_options = {"DEFAULT_CLOSED"}

    def draw(self, context):
        settings = context.scene.textalker
        self.layout.prop(settings, "steps")
        self.layout.prop(settings, "seed")
        self.layout.prop(settings, "blinks")
        if settings.blinks == "CUSTOM":
            self.layout.prop(settings, "blink_rate")
        self.layout.prop(settings, "brows")
        if settings.brows == "CUSTOM":
            self.layout.prop(settings, "brow_rate")
        self.layout.prop(settings, "lip_seal_mm")


CLASSES = (TEXTALKER_PT_main, TEXTALKER_PT_advanced)
