"""Any head mesh (issue #20), the artist's side: Fit to This Head, Place Landmarks (modal, with
guidance in the header and the status bar), Clear Head Fit, and a sidebar sub-panel."""

from __future__ import annotations

import bpy
import numpy as np

from ..core import head_fit
from ..core.errors import TexTalkerError
from . import head_fitting
from .panel import _SidebarTab
from .scene_inputs import target_object


def _fit_summary(fit: head_fit.HeadFit) -> str:
    measures = fit.measures
    how = "your landmarks" if measures.get("landmarks_given") else "landmarks found automatically"
    text = (
        f"Fitted in {measures.get('fit_s', 0.0):.1f} s with {how}: the template's face is within "
        f"{measures.get('fit_face_median_mm', 0.0):.2f} mm (median) of this head"
    )
    unsure = [name for name, value in fit.landmark_confidence.items() if value < 0.5]
    if unsure:
        text += f". Check these landmarks (Place Landmarks): {', '.join(unsure)}"
    for note in measures.get("notes", []):
        text += f". {note}"
    return text


def _usable_target(context):
    obj = target_object(context)
    if obj is None or obj.type != "MESH":
        return None, "Select a mesh"
    if obj.mode != "OBJECT":
        return None, "Switch to Object Mode"
    return obj, None


class TEXTALKER_OT_fit_head(bpy.types.Operator):
    """Fit the template head to this mesh so TexTalker can drive a head of any topology and UV layout
    (uses the landmarks you placed, or finds them)"""

    bl_idname = "textalker.fit_head"
    bl_label = "Fit to This Head"
    bl_options = {"REGISTER", "UNDO"}

    use_landmarks: bpy.props.BoolProperty(
        name="Use Placed Landmarks", default=True,
        description="Align with the landmarks placed by hand (at least 4); off: find the head automatically",
    )

    @classmethod
    def poll(cls, context):
        obj, reason = _usable_target(context)
        if obj is None:
            cls.poll_message_set(reason)
        return obj is not None

    def execute(self, context):
        obj, _ = _usable_target(context)
        window_manager = context.window_manager
        window_manager.progress_begin(0, 100)
        try:
            fit = head_fitting.fit_object(
                obj, use_landmarks=self.use_landmarks,
                progress=lambda share: window_manager.progress_update(int(100 * share)),
            )
        except TexTalkerError as error:  # nothing was stored: say why
            self.report({"ERROR"}, str(error))
            return {"CANCELLED"}
        finally:
            window_manager.progress_end()
        unsure = any(value < 0.5 for value in fit.landmark_confidence.values()) or fit.measures.get("notes")
        self.report({"WARNING"} if unsure else {"INFO"}, _fit_summary(fit))
        return {"FINISHED"}


class TEXTALKER_OT_clear_head_fit(bpy.types.Operator):
    """Forget this mesh's head fit, its influence group and its landmarks"""

    bl_idname = "textalker.clear_head_fit"
    bl_label = "Clear Head Fit"
    bl_options = {"REGISTER", "UNDO"}

    @classmethod
    def poll(cls, context):
        obj, _ = _usable_target(context)
        return obj is not None and (head_fitting.FIT_PROPERTY in obj.data or head_fitting.LANDMARK_PROPERTY in obj.data)

    def execute(self, context):
        obj, _ = _usable_target(context)
        head_fitting.remove_fit(obj)
        return {"FINISHED"}


class LandmarkSession:
    """The landmark-placing steps, without Blender events (the modal operator maps its events
    onto these; tests drive it directly). Points are in the mesh's coordinates."""

    def __init__(self, start: dict[str, np.ndarray] | None = None):
        self.names = list(head_fit.LANDMARK_NAMES)
        self.points = {name: np.asarray(point, np.float64) for name, point in (start or {}).items()}
        self.index = 0

    @property
    def done(self) -> bool:
        return self.index >= len(self.names)

    @property
    def current(self) -> str | None:
        return None if self.done else self.names[self.index]

    def place(self, point) -> None:
        if not self.done:
            self.points[self.current] = np.asarray(point, np.float64)
            self.index += 1

    def skip(self) -> None:
        """Keeps the current point as it is (or leaves it out) and goes on."""
        self.index = min(self.index + 1, len(self.names))

    def back(self) -> None:
        self.index = max(self.index - 1, 0)

    def forget(self) -> None:
        """Leaves the current landmark out (an eye hidden by hair...)."""
        if not self.done:
            self.points.pop(self.current, None)
            self.index += 1

    def guidance(self) -> str:
        if self.done:
            return f"TexTalker landmarks: {len(self.points)} placed. Enter: keep them, Esc: cancel"
        step = f"{self.index + 1}/{len(self.names)}"
        state = "placed, click to move it" if self.current in self.points else "click on the mesh"
        return (
            f"TexTalker landmark {step}: {head_fit.LANDMARK_HINTS[self.current]} ({state}). "
            "Space: keep and next, Right-click/Backspace: back, X: leave out, Enter: done, Esc: cancel"
        )

    def result(self) -> dict[str, np.ndarray]:
        if len(self.points) < head_fit.MIN_LANDMARKS:
            raise TexTalkerError(
                f"Only {len(self.points)} landmarks placed: place at least {head_fit.MIN_LANDMARKS}, "
                "or cancel (Esc) to let Fit find the head by itself"
            )
        return dict(self.points)


def ray_hit_on_object(context, obj, mouse_xy) -> np.ndarray | None:
    """The point of `obj` under the mouse, in its mesh coordinates (None when the ray misses)."""
    from bpy_extras import view3d_utils

    region, view = context.region, context.region_data
    origin = view3d_utils.region_2d_to_origin_3d(region, view, mouse_xy)
    direction = view3d_utils.region_2d_to_vector_3d(region, view, mouse_xy)
    to_local = obj.matrix_world.inverted()
    local_origin = to_local @ origin
    local_direction = (to_local.to_3x3() @ direction).normalized()
    evaluated = obj.evaluated_get(context.evaluated_depsgraph_get())
    hit, location, _normal, _face = evaluated.ray_cast(local_origin, local_direction)
    return np.array(location[:], np.float64) if hit else None


class TEXTALKER_OT_place_landmarks(bpy.types.Operator):
    """Place (or correct) the face landmarks by clicking on the mesh, one after the other, with
    guidance in the header; Fit to This Head then uses them"""

    bl_idname = "textalker.place_landmarks"
    bl_label = "Place Landmarks"
    bl_options = {"REGISTER", "UNDO"}

    _session = None
    _draw_handle = None
    _object_name = ""

    @classmethod
    def poll(cls, context):
        obj, reason = _usable_target(context)
        if obj is None:
            cls.poll_message_set(reason)
            return False
        if context.area is None or context.area.type != "VIEW_3D":
            cls.poll_message_set("Run it from the 3D View")
            return False
        return True

    def invoke(self, context, event):
        obj, _ = _usable_target(context)
        start = head_fitting.stored_landmarks(obj.data)
        if not start:
            # After an automatic fit, start from where it put the landmarks: check and move them.
            try:
                fit = head_fitting.stored_fit(obj.data)
            except TexTalkerError:
                fit = None
            if fit is not None:
                start = dict(fit.landmarks)
        self._session = LandmarkSession(start)
        self._object_name = obj.name
        self._draw_handle = bpy.types.SpaceView3D.draw_handler_add(
            _draw_landmarks, (self, context), "WINDOW", "POST_VIEW"
        )
        self._show(context)
        context.window_manager.modal_handler_add(self)
        return {"RUNNING_MODAL"}

    def _show(self, context) -> None:
        text = self._session.guidance()
        context.area.header_text_set(text)
        if context.workspace is not None:
            context.workspace.status_text_set(text)
        context.area.tag_redraw()

    def _finish(self, context) -> None:
        if self._draw_handle is not None:
            bpy.types.SpaceView3D.draw_handler_remove(self._draw_handle, "WINDOW")
            self._draw_handle = None
        context.area.header_text_set(None)
        if context.workspace is not None:
            context.workspace.status_text_set(None)
        context.area.tag_redraw()

    def modal(self, context, event):
        session = self._session
        obj = bpy.data.objects.get(self._object_name)
        if obj is None:
            self._finish(context)
            return {"CANCELLED"}
        if event.type == "ESC" and event.value == "PRESS":
            self._finish(context)
            return {"CANCELLED"}
        if event.type in {"RET", "NUMPAD_ENTER"} and event.value == "PRESS":
            try:
                points = session.result()
            except TexTalkerError as error:
                self.report({"WARNING"}, str(error))
                return {"RUNNING_MODAL"}
            head_fitting.store_landmarks(obj.data, points)
            self._finish(context)
            self.report({"INFO"}, f"{len(points)} landmarks kept: press Fit to This Head")
            return {"FINISHED"}
        if event.value == "PRESS":
            if event.type == "LEFTMOUSE" and not session.done:
                point = ray_hit_on_object(context, obj, (event.mouse_region_x, event.mouse_region_y))
                if point is not None:
                    session.place(point)
                self._show(context)
                return {"RUNNING_MODAL"}
            if event.type in {"RIGHTMOUSE", "BACK_SPACE"}:
                session.back()
                self._show(context)
                return {"RUNNING_MODAL"}
            if event.type == "SPACE":
                session.skip()
                self._show(context)
                return {"RUNNING_MODAL"}
            if event.type in {"X", "DEL"}:
                session.forget()
                self._show(context)
                return {"RUNNING_MODAL"}
        return {"PASS_THROUGH"}  # navigation (orbit, zoom, pan) keeps working


def _draw_landmarks(operator, context) -> None:
    """Placed landmarks as points (the current one larger and yellow), in world space."""
    session = operator._session
    obj = bpy.data.objects.get(operator._object_name)
    if session is None or obj is None or not session.points:
        return
    import gpu
    from gpu_extras.batch import batch_for_shader

    matrix = np.array(obj.matrix_world)
    try:
        shader = gpu.shader.from_builtin("POINT_UNIFORM_COLOR")
    except (ValueError, SystemError):
        shader = gpu.shader.from_builtin("UNIFORM_COLOR")
    for names, colour, size in (
        ([n for n in session.points if n != session.current], (0.2, 0.8, 1.0, 1.0), 8.0),
        ([session.current] if session.current in session.points else [], (1.0, 0.9, 0.1, 1.0), 14.0),
    ):
        if not names:
            continue
        local = np.array([session.points[n] for n in names])
        world = local @ matrix[:3, :3].T + matrix[:3, 3]
        batch = batch_for_shader(shader, "POINTS", {"pos": [tuple(p) for p in world]})
        gpu.state.point_size_set(size)
        gpu.state.depth_test_set("NONE")
        shader.uniform_float("color", colour)
        batch.draw(shader)


class TEXTALKER_PT_head_fit(_SidebarTab, bpy.types.Panel):
    bl_label = "Any Head (Fit)"
    bl_idname = "TEXTALKER_PT_head_fit"
    bl_parent_id = "TEXTALKER_PT_main"
    bl_options = {"DEFAULT_CLOSED"}

    def draw(self, context):
        layout = self.layout
        obj = target_object(context)
        if obj is None or obj.type != "MESH":
            layout.label(text="Select a head mesh", icon="INFO")
            return
        landmarks = head_fitting.stored_landmarks(obj.data)
        column = layout.column(align=True)
        column.operator(TEXTALKER_OT_place_landmarks.bl_idname, icon="EMPTY_AXIS",
                        text=f"Place Landmarks ({len(landmarks)}/{len(head_fit.LANDMARK_NAMES)})")
        column.operator(TEXTALKER_OT_fit_head.bl_idname, icon="MOD_SHRINKWRAP")
        if head_fitting.FIT_PROPERTY in obj.data:
            try:
                fit = head_fitting.stored_fit(obj.data)
            except TexTalkerError as error:
                layout.label(text=str(error), icon="ERROR")
                fit = None
            if fit is not None:
                box = layout.box()
                box.label(text=f"Fitted: {fit.measures.get('fit_face_median_mm', 0.0):.2f} mm median", icon="CHECKMARK")
                if fit.n_user_vertices != len(obj.data.vertices):
                    box.label(text="The mesh changed: fit again", icon="ERROR")
                box.label(text=f"Paint '{head_fitting.INFLUENCE_GROUP}' to mask", icon="GROUP_VERTEX")
            layout.operator(TEXTALKER_OT_clear_head_fit.bl_idname, icon="X")


CLASSES = (TEXTALKER_OT_fit_head, TEXTALKER_OT_clear_head_fit, TEXTALKER_OT_place_landmarks, TEXTALKER_PT_head_fit)
