"""The showcase pictures (tools/render_showcase.py) and the style swap (tools/style_swap.py).

Statistics are checked on constructed inputs; the tools run end to end at tiny sizes with the
bundled weights. With an untrained bundle only the mechanics are checked; once the bundle says
trained=true, the style swap must also pass (motion follows the speaking pivot, wrinkles the
wrinkle pivot).
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]

from tools import render_showcase  # noqa: E402
from tools import style_swap  # noqa: E402
from tools.style_swap import (  # noqa: E402
    MouthLandmarks,
    best_frame,
    choose_pair,
    crease_depth,
    factorial_effects,
    lip_aperture_mm,
    verdict,
)

from textalker_blender.blender import catalog  # noqa: E402

ASSETS_READY = catalog.weights_path().is_file() and (catalog.ASSETS_DIR / "template_head.npz").is_file()
needs_assets = pytest.mark.skipif(not ASSETS_READY, reason="bundled weights or template head not built")


def _bundle_trained() -> bool:
    from safetensors import safe_open

    with safe_open(str(catalog.weights_path()), framework="numpy") as handle:
        return (handle.metadata() or {}).get("trained") == "true"


def _short_speech(tmp_path, seconds: float = 2.0) -> Path:
    import soundfile

    samples, rate = soundfile.read(str(catalog.SAMPLE_SPEECH_PATH), dtype="float32")
    path = tmp_path / "speech.wav"
    soundfile.write(str(path), samples[: int(seconds * rate)], rate)
    return path


# ------------------------------------------------------------------------------------------
# Statistics on constructed inputs


def test_lip_aperture_measures_the_gap_between_the_lip_sets_in_mm():
    mouth = MouthLandmarks(upper=np.array([0, 1]), lower=np.array([2]), chin=np.array([3]),
                           neutral=np.zeros((4, 3), np.float32))
    offsets = np.zeros((3, 4, 3), np.float32)
    offsets[1, 2, 2] = -0.004  # lower lip 4 mm down: 4 mm open
    offsets[2, [0, 1], 2] = [0.001, 0.003]  # upper lip 2 mm up on average ...
    offsets[2, 2, 2] = 0.001  # ... lower lip 1 mm up: 1 mm open
    offsets[:, :, 0] = 0.05  # sideways motion does not open the mouth
    np.testing.assert_allclose(lip_aperture_mm(offsets, mouth), [0.0, 4.0, 1.0], atol=1e-4)


@needs_assets
def test_template_mouth_landmarks_open_with_the_jaw():
    from textalker_blender.core.template import load_template

    template = load_template()
    mouth = MouthLandmarks.from_template(template)
    assert len(mouth.upper) >= 2 and len(mouth.lower) >= 2 and len(mouth.chin) >= 1
    assert not set(mouth.upper) & set(mouth.lower)
    assert template.lip_mask[mouth.upper].all() and template.lip_mask[mouth.lower].all()
    assert template.vertices[mouth.upper, 2].mean() > template.vertices[mouth.lower, 2].mean()
    jaw = template.unit_offsets[template.unit_index("jawOpen")]
    aperture = lip_aperture_mm(np.stack([w * jaw for w in (0.0, 0.3, 1.0)]), mouth)
    assert aperture[0] == 0.0 and 0 < aperture[1] < aperture[2]
    assert 15.0 < aperture[2] < 60.0  # a wide-open jaw opens the lips by centimetres, not metres


def test_crease_depth_weights_the_darkening_by_the_region():
    maps = np.ones((2, 8, 8, 3), np.float32)
    maps[1, :4] = 0.8  # 20 % darker in the top half ...
    maps[1, 4:, :, 0] = 0.4  # ... and a red-only change in the bottom half, outside the region
    region = np.zeros((8, 8), np.float32)
    region[:4] = 1.0
    np.testing.assert_allclose(crease_depth(maps, region), [0.0, 0.2], atol=1e-6)
    soft = region.copy()
    soft[:2] = 0.5  # weights: half of the region counts half
    np.testing.assert_allclose(crease_depth(maps, soft), [0.0, 0.2], atol=1e-6)
    with pytest.raises(ValueError):
        crease_depth(maps, np.zeros((8, 8)))


def test_factorial_effects_split_speaking_from_wrinkle():
    only_speaking = {("A", "A"): 3.0, ("A", "B"): 3.0, ("B", "A"): 1.0, ("B", "B"): 1.0}
    effects = factorial_effects(only_speaking)
    assert effects["speaking_effect"] == 2.0 and effects["wrinkle_effect"] == 0.0
    assert effects["speaking_share"] == 1.0 and effects["mean"] == 2.0
    only_wrinkle = {("A", "A"): 0.1, ("A", "B"): 0.3, ("B", "A"): 0.1, ("B", "B"): 0.3}
    effects = factorial_effects(only_wrinkle)
    assert effects["wrinkle_effect"] == pytest.approx(-0.2) and effects["speaking_share"] == 0.0
    mixed = {("A", "A"): 4.0, ("A", "B"): 3.0, ("B", "A"): 1.0, ("B", "B"): 0.0}
    assert factorial_effects(mixed)["speaking_share"] == pytest.approx(3.0 / 4.0)
    assert factorial_effects(dict.fromkeys(mixed, 1.0))["speaking_share"] == 0.5


def _table(motion, wrinkle):
    return {combo: {style_swap.MOTION_PRIMARY: motion[combo], style_swap.WRINKLE_PRIMARY: wrinkle[combo]}
            for combo in style_swap.COMBINATIONS}


def test_verdict_passes_only_when_each_stream_follows_its_own_pivot():
    follows_speaking = {("A", "A"): 3.0, ("A", "B"): 3.0, ("B", "A"): 1.0, ("B", "B"): 1.0}
    follows_wrinkle = {("A", "A"): 0.02, ("A", "B"): 0.08, ("B", "A"): 0.02, ("B", "B"): 0.08}
    passed, reasons = verdict(_table(follows_speaking, follows_wrinkle))
    assert passed and len(reasons) == 4 and all(r.startswith("ok") for r in reasons)
    # Swapped: the motion follows the wrinkle pivot and the creases the speaking pivot.
    swapped_motion = {("A", "A"): 3.0, ("A", "B"): 1.0, ("B", "A"): 3.0, ("B", "B"): 1.0}
    swapped_wrinkle = {("A", "A"): 0.02, ("A", "B"): 0.02, ("B", "A"): 0.08, ("B", "B"): 0.08}
    passed, reasons = verdict(_table(swapped_motion, swapped_wrinkle))
    assert not passed and all(r.startswith("FAIL") for r in reasons)
    # A and B that do not differ cannot show anything.
    flat = dict.fromkeys(follows_speaking, 2.0)
    passed, reasons = verdict(_table(flat, follows_wrinkle))
    assert not passed


def test_choose_pair_maximises_the_smaller_gap_and_puts_the_livelier_mouth_first():
    screen = [
        {"id": 0, style_swap.MOTION_PRIMARY: 1.0, style_swap.WRINKLE_PRIMARY: 0.01},
        {"id": 1, style_swap.MOTION_PRIMARY: 3.0, style_swap.WRINKLE_PRIMARY: 0.011},  # mouth only
        {"id": 2, style_swap.MOTION_PRIMARY: 1.1, style_swap.WRINKLE_PRIMARY: 0.05},  # creases only
        {"id": 3, style_swap.MOTION_PRIMARY: 2.8, style_swap.WRINKLE_PRIMARY: 0.048},  # both
    ]
    # 1 and 2 differ most in both (lively mouth + faint creases vs quiet mouth + deep creases).
    assert choose_pair(screen) == (1, 2)
    assert choose_pair([screen[0], screen[3]]) == (3, 0)
    with pytest.raises(ValueError):
        choose_pair(screen[:1])


def test_best_frame_wants_an_open_mouth_and_creased_skin_together():
    aperture = np.array([0, 9, 1, 6, 8, 2, 0, 0], np.float32)
    depth = np.array([0, 0.0, 0.09, 0.07, 0.01, 0.08, 0, 0], np.float32)
    assert best_frame([aperture, aperture + 1], [depth, depth], margin=1) == 3


def test_sheet_frames_are_spread_over_the_clip_and_maps_are_pictured():
    assert render_showcase.sheet_frame_indices(100, 4) == [12, 37, 62, 87]
    assert render_showcase.sheet_frame_indices(3, 10) == [0, 1, 2]
    from tools.showcase_common import map_picture, ratio_map_picture, region_crop

    picture = ratio_map_picture(np.array([[[1.0, 0.9, 0.5]]], np.float32))
    np.testing.assert_allclose(picture, [[[1.0, 0.6, 0.0]]], atol=1e-6)
    region = np.zeros((20, 30), np.float32)
    region[5:8, 10:20] = 1.0
    crop = region_crop(region, margin=1)
    assert crop == (slice(4, 9), slice(9, 21))
    assert map_picture(np.ones((20, 30, 3), np.float32), crop, height=15).shape == (15, 36, 3)


def test_phoneme_labels_come_from_the_script_that_made_the_sample():
    text, voice, offset = render_showcase.sample_transcript()
    assert text.startswith("Bob and Pam") and text.endswith("market instead.") and "\\" not in text
    assert voice == "slt" and offset == pytest.approx(0.2)
    phonemes = [("pau", 0.0, 0.2), ("b", 0.2, 0.25), ("aa", 0.25, 0.4)]
    assert [render_showcase.phoneme_at(phonemes, t) for t in (0.1, 0.2, 0.3, 0.5)] == ["-", "b", "aa", "-"]


@pytest.mark.skipif(shutil.which("flite") is None, reason="needs Debian's flite")
def test_flite_timings_are_used_only_when_they_match_the_audio():
    phonemes = render_showcase.flite_phonemes("Bob and Pam.", "slt", 0.2)
    labels = [p[0] for p in phonemes]
    assert "b" in labels and "p" in labels and "ae" in labels
    assert phonemes[0][1] == pytest.approx(0.2)  # shifted by the leading silence
    assert all(a[2] == pytest.approx(b[1]) for a, b in zip(phonemes, phonemes[1:]))  # contiguous
    length = phonemes[-1][2] + 0.2
    assert render_showcase.flite_phonemes("Bob and Pam.", "slt", 0.2, audio_s=length)
    assert render_showcase.flite_phonemes("Bob and Pam.", "slt", 0.2, audio_s=length + 1.0) == []


def test_close_ups_go_where_the_creases_are():
    from tools.showcase_common import closeup_group_of, strongest_region

    shape = (6, 6)
    regions = {name: np.zeros(shape, np.float32) for name in
               ("forehead", "glabella", "crows_feet", "nasolabial", "lips")}
    regions["forehead"][0] = 1.0
    regions["nasolabial"][4] = 1.0
    for name in ("glabella", "crows_feet", "lips"):
        regions[name][2] = 1.0
    faint_forehead = np.ones((3,) + shape + (3,), np.float32)
    faint_forehead[:, 0] = 0.95
    deep_folds = faint_forehead.copy()
    deep_folds[:, 4] = 0.7
    # One sequence: where it darkens most; several: where they differ most.
    assert strongest_region([faint_forehead], regions) == "forehead"
    assert strongest_region([deep_folds], regions) == "nasolabial"
    assert strongest_region([faint_forehead, deep_folds], regions) == "nasolabial"
    assert closeup_group_of("forehead") == closeup_group_of("crows_feet") == "upper_face"
    assert closeup_group_of("nasolabial") == closeup_group_of("lips") == "lower_face"


@needs_assets
def test_wrinkle_region_maps_cover_the_crease_regions():
    from tools.showcase_common import wrinkle_region_maps

    maps = wrinkle_region_maps(64)
    assert {"forehead", "glabella", "crows_feet", "nasolabial", "lips", "all", "upper_face", "lower_face"} <= set(maps)
    for name, values in maps.items():
        assert values.shape == (64, 64) and values.min() >= 0.0 and values.max() <= 1.0, name
        assert values.sum() > 0, name
        assert np.all(maps["all"] >= values - 1e-6), name
    # The forehead lies above the lips in the (image-row-order) wrinkle map.
    rows = np.arange(64)[:, None]
    centre = {n: (maps[n] * rows).sum() / maps[n].sum() for n in ("forehead", "lips")}
    assert centre["forehead"] < centre["lips"]


# ------------------------------------------------------------------------------------------
# The tools end to end


@needs_assets
@pytest.mark.slow
def test_style_swap_measures_the_four_combinations_with_the_bundled_weights(tmp_path):
    audio = _short_speech(tmp_path)
    summary = style_swap.main(["--out", str(tmp_path / "docs"), "--audio", str(audio), "--steps", "2",
                               "--screen-seconds", "1", "--no-render", "--device", "CPU"])
    assert set(summary["table"]) == {"AA", "AB", "BA", "BB"}
    for stats in summary["table"].values():
        assert set(stats) == set(style_swap.MOTION_STATISTICS + style_swap.WRINKLE_STATISTICS)
        assert all(math.isfinite(v) for v in stats.values())
        assert stats["lip_aperture_std_mm"] >= 0 and stats["mouth_mean_abs_offset_mm"] >= 0
    assert summary["styles"]["A"]["id"] != summary["styles"]["B"]["id"]
    assert summary["n_frames"] == 48 and 0 <= summary["frame_index"] < 48
    markdown = (tmp_path / "docs" / "STYLE.md").read_text()
    assert summary["weights_sha256"] in markdown
    assert markdown.count("\n| A | ") == 2 and markdown.count("\n| B | ") == 2
    assert ("**PASS:" in markdown) == summary["passed"]
    if _bundle_trained():
        assert summary["passed"], summary["reasons"]
        effects = summary["effects"]
        assert effects[style_swap.MOTION_PRIMARY]["speaking_share"] > 0.9
        assert effects[style_swap.WRINKLE_PRIMARY]["speaking_share"] < 0.1


@needs_assets
@pytest.mark.slow
@pytest.mark.blender
def test_render_showcase_writes_a_contact_sheet_and_an_mp4_with_sound(tmp_path):
    import bpy

    audio = _short_speech(tmp_path)
    out = tmp_path / "docs"
    summary = render_showcase.main([
        "--out", str(out), "--audio", str(audio), "--work", str(tmp_path / "work"), "--resolution", "64",
        "--samples", "1", "--sheet-frames", "3", "--sheet-columns", "3", "--closeup-width", "96",
        "--clip-seconds", "0.5", "--clip-resolution", "48", "--clip-samples", "1", "--steps", "2",
        "--fps", "24", "--device", "CPU",
    ])
    from PIL import Image

    assert summary["frames"] == 48
    sheet = Image.open(out / render_showcase.SHEET_NAME)
    assert list(sheet.size) == summary["sheet"]["size"]
    # 3 frames of 64 px side by side, then 2 close-ups of 96 px and 2 wrinkle maps: wider than 3 x 64.
    assert sheet.width >= 2 * 96 + 3 * 4 and sheet.height > 2 * 64
    assert summary["sheet"]["frames"] == [9, 25, 41]
    pixels = np.asarray(sheet.convert("RGB"), np.float32)
    assert pixels.std() > 10  # rendered faces and labels, not a blank sheet
    assert summary["sheet"]["closeup_regions"] in ("upper_face", "lower_face")
    closeups = summary["sheet"]["closeup_frames"]
    assert 1 <= closeups["calmest"] <= 48 and 1 <= closeups["most_creased"] <= 48

    if not bpy.app.build_options.codec_ffmpeg:
        assert "skipped" in summary["clip"]
        pytest.skip("this bpy has no FFmpeg: the MP4 part cannot be checked")
    movie = out / render_showcase.CLIP_NAME
    assert summary["clip"]["frames"] == 12  # 0.5 s at 24 fps
    clip = bpy.data.movieclips.load(str(movie))
    assert clip.frame_duration == 12 and tuple(clip.size) == (48, 48) and clip.fps == pytest.approx(24.0)
    import aud

    sound = aud.Sound(str(movie))  # the sound strip was muxed in: the file has an audio stream
    rate = sound.specs[0]
    assert sound.length / rate == pytest.approx(0.5, abs=0.06)
    assert np.abs(sound.data()).max() > 0.01


@needs_assets
@pytest.mark.slow
@pytest.mark.blender
def test_style_swap_renders_a_two_by_two_grid(tmp_path):
    from PIL import Image

    audio = _short_speech(tmp_path, 1.5)
    summary = style_swap.main(["--out", str(tmp_path / "docs"), "--audio", str(audio), "--steps", "2",
                               "--styles", "0", "1", "--resolution", "48", "--samples", "1",
                               "--work", str(tmp_path / "work"), "--device", "CPU"])
    grid = summary["grid"]
    picture = Image.open(tmp_path / "docs" / "style_swap.png")
    assert list(picture.size) == grid["size"] and picture.width > 2 * 48 and picture.height >= 2 * 48
    renders = [np.asarray(Image.open(tmp_path / "work" / f"swap_{c}.png").convert("RGB"), np.float32)
               for c in ("AA", "AB", "BA", "BB")]
    assert all(r.shape == (48, 48, 3) for r in renders)
    closeups = [np.asarray(Image.open(tmp_path / "work" / f"swap_{c}_closeup.png").convert("RGB"))
                for c in ("AA", "AB", "BA", "BB")]
    assert all(c.shape == (24, 48, 3) for c in closeups)
    assert picture.height >= 2 * (48 + 24)  # each cell: portrait over its close-up
    assert 1 <= grid["frame"] <= 36
    assert "style_swap.png" in (tmp_path / "docs" / "STYLE.md").read_text()
    assert json.dumps(summary["styles"])  # plain data, for the lead's report
