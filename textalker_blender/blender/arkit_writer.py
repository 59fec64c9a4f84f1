"""The "ARKit curves" output: 52 ARKit shape keys with one F-curve each, or the user's own keys.

Two cases (chosen in `api.prepare` from the mesh's shape key names, `core.arkit.match_arkit_names`):
- **create** (the template head): 52 keys named like the ARKit units, made from the template's
  face-unit offsets, and the mouth parts (teeth, tongue) get the same keys, driven by the
  head's keys so editing the head's `jawOpen` curve also moves the teeth.
- **drive** (a mesh with ARKit-named keys: Faceit, MPFB face rig, VRM / Ready Player Me): no
  new keys; the matched keys' values are keyed.

Keys are written per frame with LINEAR interpolation: values between frames (motion blur,
sub-frame renders, another scene fps) stay between the two solved values, so within [0, 1];
BEZIER auto handles on a dense per-frame curve add nothing but a possible overshoot. The
artist gets one editable curve per unit (Graph Editor > Key > Decimate thins them).

Removal restores what was there: keys created here are deleted; for driven keys the curves
the user's action had on them and their static values are recorded (custom property
`textalker_arkit` on the object) and put back. A re-run removes only this output first.
"""

from __future__ import annotations

import json

import bpy
import numpy as np

from ..core.arkit import ARKIT_NAMES
from . import compat
from .writers import TAG, ensure_key_action

RECORD = "textalker_arkit"  # JSON on the object
DRIVER_TAG = "textalker_arkit_driver"
_LINEAR = 1  # Keyframe.interpolation enum index
_KEYFRAME_VECTORS = ("co", "handle_left", "handle_right")
_KEYFRAME_ENUMS = {
    "interpolation": ("CONSTANT", "LINEAR", "BEZIER", "SINE", "QUAD", "CUBIC", "QUART", "QUINT",
                      "EXPO", "CIRC", "BACK", "BOUNCE", "ELASTIC"),
}
_KEYFRAME_STRINGS = ("handle_left_type", "handle_right_type", "easing")


def _value_path(key_name: str) -> str:
    return f'key_blocks["{bpy.utils.escape_identifier(key_name)}"].value'


def read_record(obj: bpy.types.Object | None) -> dict | None:
    if obj is None or RECORD not in obj:
        return None
    return json.loads(obj[RECORD])


def has_arkit_output(obj: bpy.types.Object | None) -> bool:
    return read_record(obj) is not None


def created_key_names(obj: bpy.types.Object) -> set[str]:
    record = read_record(obj)
    return set(record["keys"].values()) if record and record["mode"] == "create" else set()


def generated_timing(obj: bpy.types.Object) -> tuple[int, int, float] | None:
    """(first frame, last frame, fps) of the ARKit curves, or None."""
    record = read_record(obj)
    if not record or not record["n_frames"]:
        return None
    first = int(record["frame_start"])
    return first, first + int(record["n_frames"]) - 1, float(record["fps"])


# --------------------------------------------------------------------------------------------
# Actions and curves


def _key_curves(action: bpy.types.Action, key: bpy.types.Key):
    """(curve collection, curve) pairs of the curves animating the Key (its slot's, from 4.4)."""
    return compat.action_curves(action, key)


def _save_curve(curve: bpy.types.FCurve) -> dict:
    points = curve.keyframe_points
    n = len(points)
    saved = {"data_path": curve.data_path, "extrapolation": curve.extrapolation, "mute": curve.mute,
             "n": n}
    for name in _KEYFRAME_VECTORS:
        values = np.empty(2 * n, dtype=np.float32)
        points.foreach_get(name, values)
        saved[name] = values.tolist()
    interpolation = np.empty(n, dtype=np.int32)
    points.foreach_get("interpolation", interpolation)
    saved["interpolation"] = interpolation.tolist()
    for name in _KEYFRAME_STRINGS:
        saved[name] = [getattr(point, name) for point in points]
    return saved


def _restore_curve(action: bpy.types.Action, key: bpy.types.Key, saved: dict) -> None:
    curve = compat.ensure_fcurve(action, key, saved["data_path"])
    points = curve.keyframe_points
    points.add(saved["n"])
    points.foreach_set("co", saved["co"])
    points.foreach_set("interpolation", saved["interpolation"])
    for name in _KEYFRAME_STRINGS:  # handle types before handles: setting a type moves handles
        for point, value in zip(points, saved[name]):
            setattr(point, name, value)
    points.foreach_set("handle_left", saved["handle_left"])
    points.foreach_set("handle_right", saved["handle_right"])
    curve.extrapolation = saved["extrapolation"]
    curve.mute = saved["mute"]
    curve.update()


def _write_curve(action, key, key_name: str, frames: np.ndarray, values: np.ndarray) -> None:
    curve = compat.ensure_fcurve(action, key, _value_path(key_name))
    curve.keyframe_points.add(len(frames))
    coordinates = np.empty(2 * len(frames), dtype=np.float32)
    coordinates[0::2] = frames
    coordinates[1::2] = values
    curve.keyframe_points.foreach_set("co", coordinates)
    curve.keyframe_points.foreach_set("interpolation", np.full(len(frames), _LINEAR, dtype=np.int32))
    curve.update()


# --------------------------------------------------------------------------------------------
# Writing


def write_arkit_curves(
    obj: bpy.types.Object,
    weights: np.ndarray,
    fps_scene: float,
    frame_start: int,
    key_names: dict[str, str] | None = None,
    unit_offsets: np.ndarray | None = None,
    parts: dict[bpy.types.Object, np.ndarray] | None = None,
) -> dict[str, str]:
    """Keys weights (T, 52, `ARKIT_NAMES` order) on `obj`'s shape keys; frame i on frame_start + i.

    `key_names` {ARKit name: existing key}: drive those keys (drive mode). None: create one key
    per ARKit unit from `unit_offsets` (52, V, 3, ARKit order, the mesh's local frame), and on
    each `parts` object (its (52, Vp, 3) offsets) keys driven by the head's keys.
    Any previous ARKit output of `obj` is removed first. Returns {ARKit name: key name}.
    """
    weights = np.clip(np.asarray(weights, dtype=np.float32), 0.0, 1.0)
    if weights.ndim != 2 or weights.shape[1] != len(ARKIT_NAMES):
        raise ValueError(f"weights must be (T, {len(ARKIT_NAMES)}), got {weights.shape}")
    remove_arkit_output(obj)
    record = {"mode": "drive" if key_names is not None else "create", "fps": float(fps_scene),
              "frame_start": int(frame_start), "n_frames": len(weights), "saved_curves": [],
              "saved_values": {}, "parts": [], "created_basis": False}
    # Recorded before any change, so that a failure half-way can be undone by remove_arkit_output.
    if key_names is None:
        if unit_offsets is None:
            raise ValueError("unit_offsets are needed to create the ARKit keys")
        record["created_basis"] = obj.data.shape_keys is None
        key_names = _create_unit_keys(obj, np.asarray(unit_offsets, dtype=np.float32))
    key = obj.data.shape_keys
    record["keys"] = dict(key_names)
    obj[RECORD] = json.dumps(record)

    action, created_action = ensure_key_action(key, f"TexTalker_ARKit_{obj.name}")
    record["action"] = action.name
    record["created_action"] = created_action
    paths = {_value_path(name): name for name in key_names.values()}
    if record["mode"] == "drive":
        record["saved_values"] = {name: key.key_blocks[name].value for name in key_names.values()}
        for curves, curve in list(_key_curves(action, key)):
            if curve.data_path in paths:
                record["saved_curves"].append(_save_curve(curve))
                curves.remove(curve)
    obj[RECORD] = json.dumps(record)

    frames = np.arange(len(weights), dtype=np.float32) + float(frame_start)
    for column, arkit in enumerate(ARKIT_NAMES):
        if arkit in key_names:
            _write_curve(action, key, key_names[arkit], frames, weights[:, column])

    for part, part_offsets in (parts or {}).items():
        record["parts"].append(_drive_part(part, key, np.asarray(part_offsets, np.float32)))
        obj[RECORD] = json.dumps(record)
    return dict(key_names)


def _create_unit_keys(obj: bpy.types.Object, unit_offsets: np.ndarray, names=ARKIT_NAMES) -> dict[str, str]:
    mesh = obj.data
    if unit_offsets.shape != (len(names), len(mesh.vertices), 3):
        raise ValueError(f"unit offsets {unit_offsets.shape} do not fit '{obj.name}' ({len(mesh.vertices)} vertices)")
    if mesh.shape_keys is None:
        obj.shape_key_add(name="Basis", from_mix=False)
    reference = mesh.shape_keys.reference_key
    base = np.empty(len(mesh.vertices) * 3, dtype=np.float32)
    reference.data.foreach_get("co", base)
    created = {}
    for name, offsets in zip(names, unit_offsets):
        block = obj.shape_key_add(name=name, from_mix=False)
        block.value = 0.0  # Blender 5 creates new keys at 1.0
        block.relative_key = reference
        block.slider_min, block.slider_max = 0.0, 1.0
        block.data.foreach_set("co", base + offsets.ravel())
        created[name] = block.name
    return created


def _drive_part(part: bpy.types.Object, head_key: bpy.types.Key, part_offsets: np.ndarray) -> dict:
    """ARKit keys on a template part (teeth, tongue) for the units that move it, each driven by
    the head's key of the same unit."""
    moving = [i for i, offsets in enumerate(part_offsets) if np.abs(offsets).max() > 1e-7]
    created_basis = part.data.shape_keys is None
    names = _create_unit_keys(part, part_offsets[moving], [ARKIT_NAMES[i] for i in moving]) if moving else {}
    part_key = part.data.shape_keys
    for arkit, key_name in names.items():
        curve = part_key.driver_add(_value_path(key_name))
        curve.driver.type = "AVERAGE"
        variable = curve.driver.variables.new()
        variable.name = "head"
        variable.type = "SINGLE_PROP"
        variable.targets[0].id_type = "KEY"
        variable.targets[0].id = head_key
        variable.targets[0].data_path = _value_path(arkit)
    if part_key is not None:
        part_key[DRIVER_TAG] = True
    return {"object": part.name, "keys": list(names.values()), "created_basis": created_basis}


# --------------------------------------------------------------------------------------------
# Removal


def remove_arkit_output(obj: bpy.types.Object) -> int:
    """Removes the ARKit output of `obj` and restores the user's keys; returns curves removed."""
    record = read_record(obj)
    if record is None:
        return 0
    key = obj.data.shape_keys
    removed = 0
    action = bpy.data.actions.get(record.get("action", ""))
    paths = {_value_path(name) for name in record.get("keys", {}).values()}
    if key is not None and action is not None:
        if record.get("created_action") and action.get(TAG):
            removed = sum(1 for _, curve in _key_curves(action, key) if curve.data_path in paths)
            if key.animation_data is not None and key.animation_data.action == action:
                key.animation_data.action = None
            bpy.data.actions.remove(action)
        else:
            for curves, curve in list(_key_curves(action, key)):
                if curve.data_path in paths:
                    curves.remove(curve)
                    removed += 1
            for saved in record.get("saved_curves", []):
                _restore_curve(action, key, saved)
    if key is not None:
        for name, value in record.get("saved_values", {}).items():
            if name in key.key_blocks:
                key.key_blocks[name].value = value
    for part_record in record.get("parts", []):
        part = bpy.data.objects.get(part_record["object"])
        if part is not None:
            _remove_keys(part, part_record["keys"], part_record["created_basis"], drivers=True)
    if record.get("mode") == "create":
        _remove_keys(obj, list(record.get("keys", {}).values()), record.get("created_basis", False))
    del obj[RECORD]
    return removed


def _remove_keys(obj: bpy.types.Object, names: list[str], created_basis: bool, drivers: bool = False) -> None:
    key = obj.data.shape_keys
    if key is None:
        return
    if drivers and key.animation_data is not None:
        for name in names:
            key.driver_remove(_value_path(name))
    for name in names:
        block = key.key_blocks.get(name)
        if block is not None:
            obj.shape_key_remove(block)
    key = obj.data.shape_keys
    if key is not None and DRIVER_TAG in key and drivers:
        del key[DRIVER_TAG]
    if key is not None and created_basis and len(key.key_blocks) == 1:
        if key.animation_data is not None and key.animation_data.action is None and not key.animation_data.drivers:
            key.animation_data_clear()
        obj.shape_key_clear()
