"""Operators: Generate Talking Avatar (modal, worker thread), Cancel, Add Template Head, Remove."""

from __future__ import annotations

import bpy
import numpy as np

from ..core.errors import TexTalkerError
from . import api, compat, writers


def _redraw_panels(context) -> None:
    for window in context.window_manager.windows:
        for area in window.screen.areas:
            if area.type == "VIEW_3D":
                area.tag_redraw()


def _error_message(error: BaseException) -> str:
    """User errors speak for themselves; anything else is a bug: name the exception type."""
    if isinstance(error, TexTalkerError):
        return str(error)
    return f"Generation failed ({type(error).__name__}: {error})"


def _set_status_text(context, text: str | None) -> None:
    """The status bar line (None restores Blender's own)."""
    workspace = getattr(context, "workspace", None)
    if workspace is not None:
        workspace.status_text_set(text)


class TEXTALKER_OT_generate(bpy.types.Operator):
    """Animate the mesh from the audio: one shape key per frame and a wrinkle texture sequence"""

    bl_idname = "textalker.generate"
    bl_label = "Generate Talking Avatar"
    bl_options = {"REGISTER", "UNDO"}

    # Plain attributes, not annotations: Blender reads class annotations as RNA properties.
    _job = None  # api.GenerationJob while running
    _timer = None

    @classmethod
    def poll(cls, context):
        reason = api.blocking_reason(context)
        if reason:
            cls.poll_message_set(reason)
            return False
        return True

    def execute(self, context):
        """Synchronous path: background mode, scripts (EXEC_DEFAULT), batch."""
        job_state = context.window_manager.textalker_job
        try:
            request = api.request_from_context(context)
            summary = api.run(request)  # streamed: bounded memory on long audio
        except Exception as error:  # the scene is unchanged: say why and stop
            message = _error_message(error)
            job_state.last_message = message
            job_state.last_warnings = ""
            self.report({"ERROR"}, message)
            return {"CANCELLED"}
        self._report_success(job_state, summary)
        return {"FINISHED"}

    def _report_success(self, job_state, summary) -> None:
        job_state.last_message = summary.message
        job_state.last_warnings = "\n".join(summary.warnings)
        self.report({"WARNING"} if summary.note or summary.warnings else {"INFO"}, summary.message)

    def invoke(self, context, event):
        if bpy.app.background:
            return self.execute(context)
        job_state = context.window_manager.textalker_job
        try:
            request = api.request_from_context(context)
        except Exception as error:  # nothing has changed yet: say why and stop
            message = _error_message(error)
            job_state.last_message = message
            self.report({"ERROR"}, message)
            return {"CANCELLED"}
        self._job = api.GenerationJob(request)
        self._job.start()
        job_state.running = True
        job_state.cancel_requested = False
        job_state.progress = 0.0
        job_state.stage = "Starting"
        window_manager = context.window_manager
        window_manager.progress_begin(0, 100)
        self._timer = window_manager.event_timer_add(0.1, window=context.window)
        window_manager.modal_handler_add(self)
        return {"RUNNING_MODAL"}

    def modal(self, context, event):
        job_state = context.window_manager.textalker_job
        if event.type == "ESC" or job_state.cancel_requested:
            self._job.cancel()  # the thread stops at its next check; its result is dropped
            self._job.discard_output()  # the EXR files written so far
            self._finish(context, "Cancelled: the scene is unchanged")
            self.report({"WARNING"}, "TexTalker generation cancelled")
            return {"CANCELLED"}
        if event.type != "TIMER":
            return {"PASS_THROUGH"}
        update = self._job.poll_progress()
        if update is not None:
            fraction, stage = update
            job_state.progress = 100.0 * fraction
            job_state.stage = stage
            context.window_manager.progress_update(int(100 * fraction))
            _set_status_text(context, f"TexTalker: {stage} {100 * fraction:.0f}%  (Esc to cancel)")
            _redraw_panels(context)
        finished = self._job.done  # read first: then every chunk of a finished job is queued
        if finished and self._job.error is not None:
            self._job.discard_output()  # the EXR files written so far
            message = _error_message(self._job.error)
            self._finish(context, message)
            self.report({"ERROR"}, message)
            return {"CANCELLED"}
        try:
            # The wrinkle maps are written as the worker makes them (files only; the scene
            # changes in apply), so only a chunk or two of them is ever in memory.
            self._job.write_pending(None if finished else api.WRITE_BUDGET_S)
        except Exception as error:  # the writer deleted its files
            self._job.cancel()
            message = _error_message(error)
            self._finish(context, message)
            self.report({"ERROR"}, message)
            return {"CANCELLED"}
        if not finished:
            return {"PASS_THROUGH"}
        try:
            summary = api.apply(self._job.request, self._job.result, self._job.compute_s)
        except Exception as error:
            self._job.discard_output()  # also when apply refused before it got to the files
            message = _error_message(error)
            self._finish(context, message)
            self.report({"ERROR"}, message)
            return {"CANCELLED"}
        self._finish(context, summary.message)
        self._report_success(context.window_manager.textalker_job, summary)
        return {"FINISHED"}  # Blender pushes the undo step of a finished UNDO operator

    def _finish(self, context, message: str) -> None:
        window_manager = context.window_manager
        if self._timer is not None:
            window_manager.event_timer_remove(self._timer)
            self._timer = None
        window_manager.progress_end()
        _set_status_text(context, None)
        job_state = window_manager.textalker_job
        job_state.running = False
        job_state.cancel_requested = False
        job_state.stage = ""
        job_state.last_message = message
        job_state.last_warnings = ""  # a successful run sets its own after this
        _redraw_panels(context)

    def cancel(self, context):  # Blender calls this when it ends the modal itself (file load)
        if self._job is not None:
            self._job.cancel()
            self._job.discard_output()
            self._finish(context, "Cancelled")


class TEXTALKER_OT_cancel(bpy.types.Operator):
    """Stop the running generation; the scene stays as it was"""

    bl_idname = "textalker.cancel"
    bl_label = "Cancel"

    @classmethod
    def poll(cls, context):
        return context.window_manager.textalker_job.running

    def execute(self, context):
        context.window_manager.textalker_job.cancel_requested = True
        return {"FINISHED"}


class TEXTALKER_OT_remove_output(bpy.types.Operator):
    """Remove the shape keys, keyframes, wrinkle textures and nodes TexTalker added to the mesh
    and restore its material"""

    bl_idname = "textalker.remove_output"
    bl_label = "Remove TexTalker Output"
    bl_options = {"REGISTER", "UNDO"}

    delete_files: bpy.props.BoolProperty(
        name="Delete Files", default=True, description="Also delete the wrinkle EXR files on disk"
    )

    @classmethod
    def poll(cls, context):
        obj = api.target_object(context)
        if not api.has_output(obj):
            cls.poll_message_set("The target has no TexTalker output")
            return False
        return True

    def execute(self, context):
        obj = api.target_object(context)
        counts = api.remove_output(obj, delete_files=self.delete_files)
        self.report(
            {"INFO"},
            f"Removed {counts['shape_keys']} shape keys and {counts['files']} files from '{obj.name}'",
        )
        return {"FINISHED"}


# --------------------------------------------------------------------------------------------
# Template head


def _polygon_starts(sizes: np.ndarray) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int32)


def build_mesh(
    name: str, vertices, loop_vertex_indices, polygon_sizes, loop_uvs=None, vertex_colors=None
) -> bpy.types.Mesh:
    """A mesh from flat arrays (foreach_set: fast, keeps the vertex and corner order exactly)."""
    vertices = np.asarray(vertices, dtype=np.float32)
    loop_vertex_indices = np.asarray(loop_vertex_indices, dtype=np.int32)
    polygon_sizes = np.asarray(polygon_sizes, dtype=np.int32)
    mesh = bpy.data.meshes.new(name)
    mesh.vertices.add(len(vertices))
    mesh.vertices.foreach_set("co", vertices.ravel())
    mesh.loops.add(len(loop_vertex_indices))
    mesh.loops.foreach_set("vertex_index", loop_vertex_indices)
    mesh.polygons.add(len(polygon_sizes))
    mesh.polygons.foreach_set("loop_start", _polygon_starts(polygon_sizes))
    if loop_uvs is not None:
        layer = mesh.uv_layers.new(name="UVMap")
        layer.data.foreach_set("uv", np.asarray(loop_uvs, dtype=np.float32).ravel())
    if vertex_colors is not None:
        # sRGB bytes: a BYTE_COLOR attribute stores them as they are (Blender linearises on use).
        rgb = np.asarray(vertex_colors, dtype=np.float32) / 255.0
        rgba = np.concatenate([rgb, np.ones((len(rgb), 1), np.float32)], axis=1)
        attribute = mesh.color_attributes.new("Col", "BYTE_COLOR", "POINT")
        attribute.data.foreach_set("color_srgb", rgba.ravel())
    mesh.update(calc_edges=True)
    mesh.polygons.foreach_set("use_smooth", np.ones(len(polygon_sizes), dtype=bool))
    mesh.validate(clean_customdata=False)
    return mesh


def _skin_material(template) -> bpy.types.Material:
    material = compat.new_material("TexTalker Neutral Skin")
    tree = material.node_tree
    bsdf = next(n for n in tree.nodes if n.bl_idname == "ShaderNodeBsdfPrincipled")
    bsdf.inputs["Roughness"].default_value = 0.5
    bsdf.inputs["Subsurface Weight"].default_value = 0.15
    bsdf.inputs["Subsurface Radius"].default_value = (0.004, 0.002, 0.001)  # metres: skin
    albedo = tree.nodes.new("ShaderNodeTexImage")
    albedo.name = albedo.label = "Neutral Albedo"
    albedo.location = (bsdf.location.x - 600.0, bsdf.location.y)
    if template.albedo_path.is_file():
        albedo.image = bpy.data.images.load(str(template.albedo_path), check_existing=True)
        albedo.image.colorspace_settings.name = "sRGB"
    tree.links.new(albedo.outputs["Color"], bsdf.inputs["Base Color"])
    return material


def _part_material(part_name: str, roughness: float) -> bpy.types.Material:
    """Eyes, teeth, tongue: colour from the part's vertex colours (iris, pupil, ...)."""
    material = compat.new_material(f"TexTalker {part_name}")
    tree = material.node_tree
    bsdf = next(n for n in tree.nodes if n.bl_idname == "ShaderNodeBsdfPrincipled")
    colour = tree.nodes.new("ShaderNodeAttribute")
    colour.attribute_name = "Col"
    colour.location = (bsdf.location.x - 300.0, bsdf.location.y)
    tree.links.new(colour.outputs["Color"], bsdf.inputs["Base Color"])
    bsdf.inputs["Roughness"].default_value = roughness
    return material


def add_template_head(context, location=None) -> bpy.types.Object:
    """Links the template head (with its eyes / mouth parts as child objects) into the scene."""
    from ..core.template import load_template

    template = load_template()
    mesh = build_mesh(
        "TexTalker Head", template.vertices, template.loop_vertex_indices,
        template.polygon_sizes, template.loop_uvs,
    )
    mesh.materials.append(_skin_material(template))
    head = bpy.data.objects.new("TexTalker Head", mesh)
    collection = context.collection or context.scene.collection
    collection.objects.link(head)
    if location is not None:
        head.location = location
    part_materials = template.metadata.get("part_materials", {})
    for part_name, part in template.parts.items():
        part_mesh = build_mesh(
            f"TexTalker {part_name}", part["vertices"], part["loop_vertex_indices"],
            part["polygon_sizes"], part.get("loop_uvs"), part.get("vertex_colors"),
        )
        roughness = float(part_materials.get(part_name, {}).get("roughness", 0.4))
        part_mesh.materials.append(_part_material(part_name, roughness))
        child = bpy.data.objects.new(f"TexTalker {part_name}", part_mesh)
        child[writers.PART_TAG] = part_name
        collection.objects.link(child)
        child.parent = head
    for other in context.view_layer.objects:
        other.select_set(False)
    head.select_set(True)
    context.view_layer.objects.active = head
    return head


class TEXTALKER_OT_add_template_head(bpy.types.Operator):
    """Add the TexTalker template head (MakeHuman topology and UV layout) with its neutral skin"""

    bl_idname = "textalker.add_template_head"
    bl_label = "Add Template Head"
    bl_options = {"REGISTER", "UNDO"}

    @classmethod
    def poll(cls, context):
        return context.mode == "OBJECT"

    def execute(self, context):
        try:
            head = add_template_head(context, location=context.scene.cursor.location.copy())
        except (OSError, ValueError) as error:
            self.report({"ERROR"}, f"Cannot load the template head: {error}")
            return {"CANCELLED"}
        self.report({"INFO"}, f"Added '{head.name}' ({len(head.data.vertices)} vertices)")
        return {"FINISHED"}


CLASSES = (
    TEXTALKER_OT_generate,
    TEXTALKER_OT_cancel,
    TEXTALKER_OT_remove_output,
    TEXTALKER_OT_add_template_head,
)
