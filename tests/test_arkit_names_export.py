"""ARKit name matching, weight order, fit errors, and the CSV / JSON files (core only, no bpy)."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from textalker_blender.core.arkit import (
    ARKIT_NAMES,
    ArkitNameError,
    ArkitSolver,
    arkit_fit_errors,
    arkit_name_of,
    from_arkit_order,
    match_arkit_names,
    smoothness_at_fps,
    solve_arkit_weights,
    to_arkit_order,
)
from textalker_blender.core.arkit_export import (
    ArkitTrack,
    read_csv,
    read_json,
    write_csv,
    write_json,
    write_track,
)
from textalker_blender.core.errors import TexTalkerError


@pytest.mark.parametrize(
    "spelling,arkit",
    [
        ("jawOpen", "jawOpen"), ("JawOpen", "jawOpen"), ("jaw_open", "jawOpen"), ("JAW_OPEN", "jawOpen"),
        ("mouthSmile_L", "mouthSmileLeft"), ("MouthSmileLeft", "mouthSmileLeft"),
        ("mouthSmileLeft", "mouthSmileLeft"), ("mouth_smile_left", "mouthSmileLeft"),
        ("eyeBlink_L", "eyeBlinkLeft"), ("EyeBlinkLeft", "eyeBlinkLeft"), ("eyeBlink.L", "eyeBlinkLeft"),
        ("eyeBlinkL", "eyeBlinkLeft"), ("eye_blink_r", "eyeBlinkRight"), ("noseSneer_R", "noseSneerRight"),
        ("mouth_right", "mouthRight"), ("jaw_L", "jawLeft"),
        # names that end in l / r without being a side must stay themselves
        ("mouthShrugUpper", "mouthShrugUpper"), ("MouthRollUpper", "mouthRollUpper"),
        # FBX / Maya namespaces
        ("blendShape1.jawOpen", "jawOpen"), ("Face.eyeBlink_R", "eyeBlinkRight"),
    ],
)
def test_spellings_map_to_the_arkit_name(spelling, arkit):
    assert arkit_name_of(spelling) == arkit


@pytest.mark.parametrize("name", ["Basis", "Smile", "eyeBlink", "jawOpen.001", "mouthSmileUp", "", "L"])
def test_other_names_are_not_arkit_units(name):
    assert arkit_name_of(name) is None


def test_every_arkit_name_and_its_capitalised_form_match_itself():
    for name in ARKIT_NAMES:
        assert arkit_name_of(name) == name
        assert arkit_name_of(name[0].upper() + name[1:]) == name


def test_match_maps_arkit_names_to_the_users_keys_and_skips_others():
    names = ["Basis", "JawOpen", "mouthSmile_L", "MouthSmileRight", "eyeBlink_L", "EyeBlinkRight", "Smile", "Custom"]
    assert match_arkit_names(names) == {
        "eyeBlinkLeft": "eyeBlink_L", "eyeBlinkRight": "EyeBlinkRight", "jawOpen": "JawOpen",
        "mouthSmileLeft": "mouthSmile_L", "mouthSmileRight": "MouthSmileRight",
    }
    assert list(match_arkit_names(names)) == ["eyeBlinkLeft", "eyeBlinkRight", "jawOpen", "mouthSmileLeft",
                                              "mouthSmileRight"]  # ARKit order
    assert match_arkit_names(["Basis", "Key 1"]) == {}


def test_ambiguous_duplicates_are_refused_naming_every_key():
    with pytest.raises(ArkitNameError) as raised:
        match_arkit_names(["jawOpen", "Jaw_Open", "eyeBlink_L", "EyeBlinkLeft", "eyeBlinkLeft", "cheekPuff"])
    message = str(raised.value)
    assert "'jawOpen', 'Jaw_Open' both stand for 'jawOpen'" in message
    assert "'eyeBlink_L', 'EyeBlinkLeft', 'eyeBlinkLeft' all stand for 'eyeBlinkLeft'" in message
    assert "cheekPuff" not in message and "Rename or delete" in message
    assert isinstance(raised.value, TexTalkerError)


# --------------------------------------------------------------------------------------------
# Order, fit errors, solving on the template


def test_order_conversion_round_trips_and_fills_absent_units():
    rng = np.random.default_rng(0)
    unit_names = list(reversed(ARKIT_NAMES))[:40] + ["notArkit"]
    weights = rng.random((7, len(unit_names)))
    arkit = to_arkit_order(weights, unit_names)
    assert arkit.shape == (7, 52)
    assert np.all(arkit[:, ARKIT_NAMES.index("eyeBlinkLeft")] == 0)  # not in unit_names
    np.testing.assert_array_equal(arkit[:, ARKIT_NAMES.index("tongueOut")], weights[:, 0])
    back = from_arkit_order(arkit, unit_names)
    np.testing.assert_array_equal(back[:, :40], weights[:, :40])
    assert np.all(back[:, 40] == 0)


def test_smoothness_penalises_the_same_motion_per_second_at_any_fps():
    assert smoothness_at_fps(30.0) == pytest.approx(0.05)
    assert smoothness_at_fps(60.0) == pytest.approx(0.2)
    assert smoothness_at_fps(24.0, 0.1) == pytest.approx(0.064)


def test_project_and_frame_errors_match_an_explicit_reconstruction():
    rng = np.random.default_rng(5)
    basis = rng.normal(scale=0.003, size=(6, 50, 3))
    mask = rng.random(50) > 0.3
    solver = ArkitSolver(basis, list("abcdef"), mask)
    offsets = rng.normal(scale=0.003, size=(9, 50, 3))
    weights = rng.random((9, 6))
    projected, squared = solver.project(offsets, chunk_frames=4)
    explicit = np.sum((solver.reconstruct(weights) - offsets[:, mask]) ** 2, axis=(1, 2))
    np.testing.assert_allclose(solver.frame_errors(weights, projected, squared), explicit, rtol=1e-9)


@pytest.fixture(scope="module")
def template():
    from textalker_blender.core.template import load_template

    try:
        return load_template()
    except FileNotFoundError:
        pytest.skip("template head asset not built")


def test_solved_template_weights_come_back_in_arkit_order_with_small_errors(template):
    rng = np.random.default_rng(1)
    truth = np.zeros((60, 52), np.float32)
    truth[:, ARKIT_NAMES.index("jawOpen")] = 0.5 + 0.4 * np.sin(np.linspace(0, 3, 60))
    truth[:, ARKIT_NAMES.index("browInnerUp")] = np.linspace(0, 0.8, 60)
    truth[:, ARKIT_NAMES.index("eyeBlinkLeft")] = (np.arange(60) % 20 < 3) * 0.9
    offsets = template.apply_units(from_arkit_order(truth, template.unit_names)).astype(np.float32)
    offsets += rng.normal(scale=1e-5, size=offsets.shape).astype(np.float32)
    weights, report = solve_arkit_weights(template, offsets, fps=30.0)
    assert weights.shape == (60, 52) and weights.min() >= 0 and weights.max() <= 1
    errors = arkit_fit_errors(template, weights, offsets, truth)
    # Millimetre-level reconstruction; the blink's sharp edges are where smoothing costs most.
    assert errors.vertex_rmse_m < 5e-4, errors
    assert errors.weight_mae < 0.03, errors
    jaw = ARKIT_NAMES.index("jawOpen")
    assert np.abs(weights[:, jaw] - truth[:, jaw]).mean() < 0.05
    assert report.fit_rmse_m == pytest.approx(errors.vertex_rmse_m, rel=0.05)
    # The error function measures: other weights are worse on both counts.
    wrong = arkit_fit_errors(template, np.roll(weights, 1, axis=1), offsets, truth)
    assert wrong.vertex_rmse_m > 3 * errors.vertex_rmse_m and wrong.weight_mae > errors.weight_mae
    assert set(errors.as_dict()) >= {"vertex_rmse_m", "vertex_mean_m", "vertex_max_m", "weight_mae"}


def test_fit_errors_without_truth_and_with_bad_shapes(template):
    offsets = np.zeros((3, template.n_vertices, 3), np.float32)
    errors = arkit_fit_errors(template, np.zeros((3, 52)), offsets)
    assert errors.vertex_max_m == 0.0 and errors.weight_mae is None
    with pytest.raises(TexTalkerError, match="ARKit order"):
        arkit_fit_errors(template, np.zeros((3, 51)), offsets)
    with pytest.raises(TexTalkerError, match="frames"):
        arkit_fit_errors(template, np.zeros((2, 52)), offsets)


# --------------------------------------------------------------------------------------------
# Files


def _weights(n_frames=75, seed=2):
    rng = np.random.default_rng(seed)
    weights = np.clip(rng.normal(0.2, 0.3, size=(n_frames, 52)), 0, 1).astype(np.float32)
    weights[:, 5] = 0.0
    weights[:, 7] = 1.0
    return weights


def test_csv_round_trip_in_live_link_face_layout(tmp_path):
    weights = _weights()
    path = write_csv(tmp_path / "sub" / "take.csv", weights, fps=30.0)
    with open(path, newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[0][:4] == ["Timecode", "BlendShapeCount", "EyeBlinkLeft", "EyeLookDownLeft"]
    assert rows[0][-1] == "TongueOut" and len(rows[0]) == 54
    assert rows[1][:2] == ["00:00:00:00.000", "52"]
    assert rows[31][0] == "00:00:01:00.000" and rows[75][0] == "00:00:02:14.000"
    assert len(rows) == 76
    track = read_csv(path, fps=30.0)
    np.testing.assert_allclose(track.weights, weights, atol=1e-5 + 1e-7)
    assert track.missing == [] and track.names == ARKIT_NAMES
    assert read_csv(path).fps == 30.0  # inferred from the timecodes: 2.5 s of frames


def test_csv_timecode_at_29_97_counts_30_frames_a_second(tmp_path):
    path = write_csv(tmp_path / "ntsc.csv", _weights(40), fps=30000 / 1001)
    with open(path, newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[30][0] == "00:00:00:29.000" and rows[31][0] == "00:00:01:00.000"


def test_csv_reader_takes_live_link_face_files_with_head_columns(tmp_path):
    header = ["Timecode", "BlendShapeCount", *(n[0].upper() + n[1:] for n in ARKIT_NAMES[:-1]), "HeadYaw", "HeadPitch"]
    path = tmp_path / "llf.csv"
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerow(["15:42:33:07.466", "61", *(["0.25"] * 51), "0.9", "-0.1"])
    track = read_csv(path, fps=60.0)
    assert track.weights.shape == (1, 52)
    assert np.all(track.weights[0, :51] == 0.25) and track.weights[0, 51] == 0.0
    assert track.missing == ["tongueOut"]
    with pytest.raises(TexTalkerError, match="give the fps"):
        read_csv(path)


def test_json_round_trip(tmp_path):
    weights = _weights(12)
    path = write_json(tmp_path / "take.json", weights, fps=24.0, frame_start=101)
    document = json.loads(path.read_text())
    assert document["format"] == "textalker-arkit" and document["version"] == 1
    assert document["fps"] == 24.0 and document["frame_start"] == 101
    assert document["names"] == list(ARKIT_NAMES) and len(document["frames"]) == 12
    assert all(len(row) == 52 for row in document["frames"])
    track = read_json(path)
    np.testing.assert_allclose(track.weights, weights, atol=1e-5 + 1e-7)
    assert (track.fps, track.frame_start, track.n_frames) == (24.0, 101, 12)


def test_json_reader_accepts_names_in_another_order(tmp_path):
    path = tmp_path / "other.json"
    path.write_text(json.dumps({"format": "textalker-arkit", "version": 1, "fps": 30, "names": ["JawOpen", "eyeBlink_L"],
                                "frames": [[0.5, 0.25], [0.1, 0.0]]}))
    track = read_json(path)
    np.testing.assert_allclose(track.weights[:, ARKIT_NAMES.index("jawOpen")], [0.5, 0.1])
    np.testing.assert_allclose(track.weights[:, ARKIT_NAMES.index("eyeBlinkLeft")], [0.25, 0.0])
    assert len(track.missing) == 50


def test_bad_inputs_are_refused_with_a_message(tmp_path):
    with pytest.raises(TexTalkerError, match=r"\(frames, 52\)"):
        write_csv(tmp_path / "x.csv", np.zeros((3, 51)), 30)
    with pytest.raises(TexTalkerError, match="fps"):
        write_json(tmp_path / "x.json", np.zeros((3, 52)), 0)
    with pytest.raises(TexTalkerError, match=".csv or .json"):
        write_track(tmp_path / "x.txt", np.zeros((3, 52)), 30)
    (tmp_path / "not.json").write_text('{"format": "something else"}')
    with pytest.raises(TexTalkerError, match="not a TexTalker ARKit file"):
        read_json(tmp_path / "not.json")
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(TexTalkerError, match="empty"):
        read_csv(tmp_path / "empty.csv", fps=30)
    assert write_track(tmp_path / "ok.JSON", np.zeros((2, 52)), 30).is_file()
    assert ArkitTrack(np.zeros((0, 52)), 30).n_frames == 0


def test_values_are_clipped_and_rounded_in_files(tmp_path):
    weights = np.zeros((2, 52), np.float32)
    weights[0, 0] = 1.2
    weights[1, 0] = -1e-9
    weights[1, 1] = 0.123456789
    text = write_csv(tmp_path / "c.csv", weights, 30).read_text()
    assert "-0.0" not in text and "1.20000" not in text and "0.12346" in text


def test_unit_offsets_follow_uvs_onto_another_mesh(template):
    from textalker_blender.core.arkit import unit_offsets_for_mesh

    order = np.random.default_rng(3).permutation(template.n_vertices)
    uvs = np.concatenate([template.vertex_uvs[order], [[-1.0, -1.0], [0.999, 0.001]]])  # + 2 "body" vertices
    offsets = unit_offsets_for_mesh(template, uvs)
    assert offsets.shape == (52, template.n_vertices + 2, 3)
    expected = np.stack([template.unit_offsets[template.unit_index(n)] for n in ARKIT_NAMES])[:, order]
    np.testing.assert_array_equal(offsets[:, :-2], expected)
    assert np.all(offsets[:, -2:] == 0)
