#!/usr/bin/env python3
"""Style control, measured and pictured: speaking style A + wrinkle style B and the swap.

    .venv/bin/python tools/style_swap.py --out docs/ [--audio FILE] [--styles KEY_A KEY_B]
        [--seed 0] [--steps 0] [--fps 24] [--resolution 320] [--samples 16] [--no-render]

1. Picks two training subjects whose styles differ most (unless --styles names them): every
   style pivot of the bundle (names from its metadata) speaks a short excerpt of the audio with
   its own speaking and wrinkle pivot; A and B maximise the smaller of the two normalised gaps
   "lip-aperture variability" and "crease depth" (A is the one with the livelier mouth).
2. Generates the whole audio with the four combinations (speaking A/B x wrinkle A/B) through the
   Pipeline (the add-on's only door to the model) and measures, per combination:
   motion - lip aperture (upper-to-lower inner lip, mm, relative to the neutral) std over time
   and 95th percentile, mean |offset| of the lip vertices (mm), chin (jaw) vertical std (mm);
   wrinkles - mean crease depth 1 - ratio (mean of R, G, B), weighted by the synthetic dataset's
   crease regions (all regions; forehead only), and its 95th percentile over frames.
3. Splits each statistic like a 2x2 factorial experiment: speaking effect (A minus B with the
   wrinkle style held), wrinkle effect (A minus B with the speaking style held), and the speaking
   share |speaking| / (|speaking| + |wrinkle|). PASS when the motion statistics follow the
   speaking pivot (speaking share >= 0.75 on the aperture std), the wrinkle statistics follow the
   wrinkle pivot (share <= 0.25 on the crease depth), and A and B really differ in both
   (effects >= 5 % of the statistic's mean).
4. Writes docs/STYLE.md (tables, command, weights SHA-256, seed, steps) and, unless
   --no-render, docs/style_swap.png: a 2x2 grid of Cycles renders (rows speaking A/B, columns
   wrinkle A/B) at one frame where the mouth is open and the skin creased, made through the
   add-on (tools/demo.py scene, then `blender.api.generate` for each combination).
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tools.showcase_common import crease_depth

REPO_ROOT = Path(__file__).resolve().parents[1]

MOTION_PRIMARY = "lip_aperture_std_mm"
WRINKLE_PRIMARY = "crease_depth"
SHARE_THRESHOLD = 0.75  # motion: speaking share >= this; wrinkles: speaking share <= 1 - this
MIN_RELATIVE_EFFECT = 0.05  # A and B must differ by this fraction of the statistic's mean
MOTION_STATISTICS = ("lip_aperture_std_mm", "lip_aperture_p95_mm", "mouth_mean_abs_offset_mm",
                     "jaw_std_mm")
WRINKLE_STATISTICS = ("crease_depth", "forehead_depth", "crease_depth_p95")
COMBINATIONS = (("A", "A"), ("A", "B"), ("B", "A"), ("B", "B"))  # (speaking, wrinkle)


# --------------------------------------------------------------------------------------------
# Statistics (numpy only)


@dataclass(frozen=True)
class MouthLandmarks:
    """Vertex sets measuring the mouth: inner upper lip, inner lower lip (midline) and chin."""

    upper: np.ndarray
    lower: np.ndarray
    chin: np.ndarray
    neutral: np.ndarray  # (V, 3) metres

    @classmethod
    def from_template(cls, template) -> MouthLandmarks:
        """From the template's lip mask and its jawOpen face unit: lower-lip vertices move down
        with the jaw (> 50 % of the lips' largest jawOpen drop), upper-lip vertices barely do
        (< 10 %); of each, the half nearest the mouth slit, within the middle 30 % of the mouth
        width. The chin: face vertices moving > 90 % of jawOpen's largest displacement."""
        x = np.asarray(template.vertices, np.float32)
        lips = np.flatnonzero(template.lip_mask)
        jaw = template.unit_offsets[template.unit_index("jawOpen")]
        mid = x[lips, 0].mean()
        half_width = 0.5 * np.ptp(x[lips, 0])
        middle = lips[np.abs(x[lips, 0] - mid) < 0.3 * half_width]
        drop = -jaw[middle, 2]
        largest = drop.max()
        lower = middle[drop > 0.5 * largest]
        upper = middle[np.abs(drop) < 0.1 * largest]
        lower = lower[x[lower, 2] >= np.median(x[lower, 2])]
        upper = upper[x[upper, 2] <= np.median(x[upper, 2])]
        magnitude = np.linalg.norm(jaw, axis=1) * template.face_mask
        chin = np.flatnonzero(magnitude > 0.9 * magnitude.max())
        return cls(upper, lower, chin, x)


def lip_aperture_mm(offsets: np.ndarray, mouth: MouthLandmarks) -> np.ndarray:
    """(T,) mouth opening in mm relative to the neutral: mean height of the inner upper lip minus
    that of the inner lower lip (Z up), minus the same on the neutral face. Positive = open."""
    offsets = np.asarray(offsets, np.float32)
    gap = offsets[:, mouth.upper, 2].mean(axis=1) - offsets[:, mouth.lower, 2].mean(axis=1)
    return 1000.0 * gap


def mouth_mean_abs_offset_mm(offsets: np.ndarray, lip_mask: np.ndarray) -> np.ndarray:
    """(T,) mean length of the lip vertices' offsets, mm."""
    return 1000.0 * np.linalg.norm(np.asarray(offsets)[:, lip_mask], axis=2).mean(axis=1)


def motion_statistics(offsets: np.ndarray, mouth: MouthLandmarks, lip_mask: np.ndarray) -> dict:
    aperture = lip_aperture_mm(offsets, mouth)
    chin = 1000.0 * np.asarray(offsets)[:, mouth.chin, 2].mean(axis=1)
    return {
        "lip_aperture_std_mm": float(aperture.std()),
        "lip_aperture_p95_mm": float(np.percentile(aperture, 95)),
        "mouth_mean_abs_offset_mm": float(mouth_mean_abs_offset_mm(offsets, lip_mask).mean()),
        "jaw_std_mm": float(chin.std()),
    }


def wrinkle_statistics(ratio_maps: np.ndarray, regions: dict) -> dict:
    depth = crease_depth(ratio_maps, regions["all"])
    return {
        "crease_depth": float(depth.mean()),
        "forehead_depth": float(crease_depth(ratio_maps, regions["forehead"]).mean()),
        "crease_depth_p95": float(np.percentile(depth, 95)),
    }


def factorial_effects(values: dict) -> dict:
    """values {(speaking, wrinkle): x} over ("A"|"B")^2 -> the 2x2 main effects:
    speaking = mean over wrinkle styles of x(A, w) - x(B, w); wrinkle likewise; speaking_share =
    |speaking| / (|speaking| + |wrinkle|) (0.5 when both are zero); mean = mean of the four."""
    speaking = 0.5 * ((values["A", "A"] - values["B", "A"]) + (values["A", "B"] - values["B", "B"]))
    wrinkle = 0.5 * ((values["A", "A"] - values["A", "B"]) + (values["B", "A"] - values["B", "B"]))
    total = abs(speaking) + abs(wrinkle)
    return {
        "speaking_effect": float(speaking),
        "wrinkle_effect": float(wrinkle),
        "speaking_share": float(abs(speaking) / total) if total > 0 else 0.5,
        "mean": float(np.mean(list(values.values()))),
    }


def verdict(table: dict) -> tuple[bool, list[str]]:
    """table {(speaking, wrinkle): {statistic: value}} -> (passed, reasons)."""
    reasons = []
    motion = factorial_effects({k: v[MOTION_PRIMARY] for k, v in table.items()})
    wrinkle = factorial_effects({k: v[WRINKLE_PRIMARY] for k, v in table.items()})
    checks = [
        (motion["speaking_share"] >= SHARE_THRESHOLD,
         f"{MOTION_PRIMARY}: speaking share {motion['speaking_share']:.3f} (needs >= {SHARE_THRESHOLD})"),
        (wrinkle["speaking_share"] <= 1 - SHARE_THRESHOLD,
         f"{WRINKLE_PRIMARY}: speaking share {wrinkle['speaking_share']:.3f} (needs <= {1 - SHARE_THRESHOLD:.2f})"),
        (abs(motion["speaking_effect"]) >= MIN_RELATIVE_EFFECT * abs(motion["mean"]) and motion["mean"] != 0,
         f"{MOTION_PRIMARY}: speaking effect {motion['speaking_effect']:+.3g} vs mean {motion['mean']:.3g} "
         f"(needs >= {MIN_RELATIVE_EFFECT:.0%})"),
        (abs(wrinkle["wrinkle_effect"]) >= MIN_RELATIVE_EFFECT * abs(wrinkle["mean"]) and wrinkle["mean"] != 0,
         f"{WRINKLE_PRIMARY}: wrinkle effect {wrinkle['wrinkle_effect']:+.3g} vs mean {wrinkle['mean']:.3g} "
         f"(needs >= {MIN_RELATIVE_EFFECT:.0%})"),
    ]
    for ok, text in checks:
        reasons.append(("ok   " if ok else "FAIL ") + text)
    return all(ok for ok, _ in checks), reasons


def choose_pair(screen: list[dict]) -> tuple[int, int]:
    """screen: per style {"id", MOTION_PRIMARY, WRINKLE_PRIMARY} -> (A, B) ids maximising
    min(normalised motion gap, normalised wrinkle gap); A has the larger motion statistic."""
    if len(screen) < 2:
        raise ValueError("need at least two styles")
    motion = np.array([s[MOTION_PRIMARY] for s in screen], np.float64)
    wrinkle = np.array([s[WRINKLE_PRIMARY] for s in screen], np.float64)
    motion_range = max(np.ptp(motion), 1e-12)
    wrinkle_range = max(np.ptp(wrinkle), 1e-12)
    best, best_score = None, -1.0
    for i, j in itertools.combinations(range(len(screen)), 2):
        score = min(abs(motion[i] - motion[j]) / motion_range, abs(wrinkle[i] - wrinkle[j]) / wrinkle_range)
        if score > best_score + 1e-12:
            best, best_score = (i, j), score
    i, j = best
    if motion[j] > motion[i]:
        i, j = j, i
    return screen[i]["id"], screen[j]["id"]


def best_frame(apertures: list[np.ndarray], depths: list[np.ndarray], margin: int = 2) -> int:
    """Index of a frame where the mouth is open and the skin creased in every picture: maximises
    the smaller of the mean aperture and the mean crease depth, each as a percentile rank over
    frames (the first and last `margin` frames excluded)."""
    aperture = np.mean(apertures, axis=0)
    depth = np.mean(depths, axis=0)
    n = len(aperture)

    def rank(x):
        order = np.argsort(np.argsort(x, kind="stable"), kind="stable")
        return order / max(n - 1, 1)

    score = np.minimum(rank(aperture), rank(depth))
    if n > 2 * margin:
        score[:margin] = score[n - margin:] = -1.0
    return int(np.argmax(score))


# --------------------------------------------------------------------------------------------
# Measuring with the Pipeline


@dataclass
class SwapMeasurement:
    styles: dict  # {"A": StyleInfo, "B": StyleInfo}
    table: dict  # {(speaking, wrinkle): {statistic: value}}
    effects: dict  # {statistic: factorial_effects}
    passed: bool
    reasons: list[str]
    frame_index: int  # a frame (0-based, at `fps`) with an open mouth and creased skin
    fps: float
    n_frames: int
    screen: list[dict] = field(default_factory=list)
    pair_chosen_by: str = ""
    per_frame: dict = field(default_factory=dict)  # {(s, w): {"aperture": (T,), "depth": (T,)}}
    timings: dict = field(default_factory=dict)
    crease_crop: tuple = (slice(None), slice(None))  # wrinkle-map rows, columns of the crease regions


def _excerpt(audio, seconds: float):
    from textalker_blender.core.audio import load_audio
    from textalker_blender.core.config import SAMPLE_RATE

    samples = load_audio(audio, SAMPLE_RATE)
    return samples[: int(seconds * SAMPLE_RATE)], SAMPLE_RATE


def measure(pipeline, audio, *, styles: tuple | None = None, seed: int = 0, steps: int | None = None,
            fps: float = 24.0, screen_seconds: float = 3.0, log=print) -> SwapMeasurement:
    """Screens the styles (unless `styles` = (A, B) ids or keys), then measures the 2x2 swap."""
    from textalker_blender.core.template import load_template

    from tools.showcase_common import region_crop, wrinkle_region_maps

    template = pipeline.template if hasattr(pipeline, "template") else load_template()
    mouth = MouthLandmarks.from_template(template)
    regions = wrinkle_region_maps(pipeline.wrinkle_resolution, template)
    timings = {}
    started = time.perf_counter()
    screen = []
    if styles is None:
        excerpt = _excerpt(audio, screen_seconds)
        for info in pipeline.styles:
            result = pipeline.generate(excerpt, speaking_style=info.id, wrinkle_style=info.id, fps=fps, seed=seed, steps=steps)
            entry = {"id": info.id, "key": info.key, "name": info.name,
                     **motion_statistics(result.offsets, mouth, template.lip_mask),
                     **wrinkle_statistics(result.wrinkle_maps, regions)}
            screen.append(entry)
            log(f"screen {info.key}: aperture std {entry[MOTION_PRIMARY]:.3f} mm, "
                f"crease depth {entry[WRINKLE_PRIMARY]:.4f}")
        a, b = choose_pair(screen)
        chosen_by = (f"screened all {len(screen)} styles on the first {screen_seconds:g} s; A/B maximise "
                     f"the smaller normalised gap of {MOTION_PRIMARY} and {WRINKLE_PRIMARY}")
    else:
        a, b = (pipeline.model.pivots.index(s) for s in styles)
        chosen_by = "given on the command line"
    timings["screen_s"] = time.perf_counter() - started
    infos = {"A": pipeline.styles[a], "B": pipeline.styles[b]}

    table, per_frame = {}, {}
    started = time.perf_counter()
    n_frames = 0
    for speaking, wrinkle in COMBINATIONS:
        result = pipeline.generate(audio, speaking_style=infos[speaking].id, wrinkle_style=infos[wrinkle].id, fps=fps, seed=seed, steps=steps)
        n_frames = result.n_frames
        stats = {**motion_statistics(result.offsets, mouth, template.lip_mask),
                 **wrinkle_statistics(result.wrinkle_maps, regions)}
        if not all(math.isfinite(v) for v in stats.values()):
            raise RuntimeError(f"non-finite statistics for speaking {speaking} / wrinkle {wrinkle}: {stats}")
        table[speaking, wrinkle] = stats
        per_frame[speaking, wrinkle] = {"aperture": lip_aperture_mm(result.offsets, mouth),
                                        "depth": crease_depth(result.wrinkle_maps, regions["all"]),
                                        "maps": result.wrinkle_maps}
        log(f"speaking {speaking} + wrinkle {wrinkle}: " + ", ".join(f"{k} {v:.4g}" for k, v in stats.items()))
    timings["swap_s"] = time.perf_counter() - started
    effects = {name: factorial_effects({k: v[name] for k, v in table.items()})
               for name in MOTION_STATISTICS + WRINKLE_STATISTICS}
    passed, reasons = verdict(table)
    crease_crop = region_crop(regions["all"])
    frame_index = best_frame([p["aperture"] for p in per_frame.values()], [p["depth"] for p in per_frame.values()])
    return SwapMeasurement(infos, table, effects, passed, reasons, frame_index, float(fps), n_frames,
                           screen, chosen_by, per_frame, timings, crease_crop)


# --------------------------------------------------------------------------------------------
# Report


def _fmt(value: float) -> str:
    return f"{value:.4f}" if abs(value) < 1 else f"{value:.3f}"


def style_markdown(measurement: SwapMeasurement, *, command: str, pipeline, audio: Path, seed: int,
                   steps: int, picture: str | None, render_note: str = "") -> str:
    m = measurement
    a, b = m.styles["A"], m.styles["B"]
    metadata = {}
    try:
        from safetensors import safe_open

        with safe_open(str(pipeline.weights_path), framework="numpy") as handle:
            metadata = handle.metadata() or {}
    except Exception:
        pass
    trained = metadata.get("trained", "unknown")
    lines = [
        "# Style control: speaking style and wrinkle style swapped",
        "",
        "Written by `tools/style_swap.py`; do not edit by hand. Regenerate with:",
        "",
        "```",
        command,
        "```",
        "",
        "Measured on the synthetic TexTalk4D set's styles (not TexTalk4D): the numbers show what this",
        "bundle does, not what the paper reports.",
        "",
        f"- Weights: `{Path(pipeline.weights_path).name}`, SHA-256 `{pipeline.weights_sha256}`, "
        f"trained = `{trained}`, dataset = `{metadata.get('dataset', 'unknown')}`",
        f"- Audio: `{_repo_relative(audio)}` ({m.n_frames} frames at {m.fps:g} fps), seed {seed}, "
        f"sampler steps {steps or 'default'} ({pipeline.config.sampling_steps} by default), device {pipeline.device}",
        f"- Style A (speaking and wrinkle pivot of one training subject): **{a.name}** (`{a.key}`)",
        f"- Style B: **{b.name}** (`{b.key}`)",
        f"- How A and B were chosen: {m.pair_chosen_by}.",
        "",
    ]
    if trained != "true":
        lines += ["> **The bundle is untrained** (random weights): this page only shows that the",
                  "> measurement runs. Rerun the command above once trained weights are bundled.", ""]
    verdict_line = "PASS" if m.passed else "FAIL"
    lines += [f"**{verdict_line}: motion follows the speaking pivot, wrinkles follow the wrinkle pivot.**", ""]
    lines += [f"- {r}" for r in m.reasons] + [""]

    lines += ["## The four combinations", "",
              "| speaking | wrinkle | " + " | ".join(MOTION_STATISTICS + WRINKLE_STATISTICS) + " |",
              "| --- | --- | " + " | ".join("---:" for _ in MOTION_STATISTICS + WRINKLE_STATISTICS) + " |"]
    for combo in COMBINATIONS:
        stats = m.table[combo]
        lines.append(f"| {combo[0]} | {combo[1]} | "
                     + " | ".join(_fmt(stats[k]) for k in MOTION_STATISTICS + WRINKLE_STATISTICS) + " |")
    lines += ["", "## Which pivot moves each statistic (2x2 main effects)", "",
              "Speaking effect: A minus B of the speaking style with the wrinkle style held (mean of both);",
              "wrinkle effect likewise; speaking share = |speaking| / (|speaking| + |wrinkle|): 1 means the",
              "statistic follows only the speaking pivot, 0 only the wrinkle pivot.", "",
              "| statistic | kind | speaking effect | wrinkle effect | speaking share |",
              "| --- | --- | ---: | ---: | ---: |"]
    for name in MOTION_STATISTICS + WRINKLE_STATISTICS:
        e = m.effects[name]
        kind = "motion" if name in MOTION_STATISTICS else "wrinkle"
        lines.append(f"| {name} | {kind} | {e['speaking_effect']:+.4g} | {e['wrinkle_effect']:+.4g} | "
                     f"{e['speaking_share']:.3f} |")
    lines += [""]
    if picture:
        frame = m.frame_index
        lines += ["## Picture", "",
                  f"![speaking A/B (rows) x wrinkle A/B (columns)]({picture})", "",
                  f"Cycles renders through the add-on (template head, Generate Talking Avatar for each "
                  f"combination) at frame {frame + 1} ({frame / m.fps:.2f} s), chosen where the mouth is open "
                  f"and the skin creased in all four. Rows: speaking style A, B; columns: wrinkle style A, B."
                  + (f" {render_note}" if render_note else ""), ""]
    if m.screen:
        lines += ["## Screening (each style with its own speaking and wrinkle pivot, first seconds)", "",
                  f"| style | key | {MOTION_PRIMARY} | {WRINKLE_PRIMARY} |", "| --- | --- | ---: | ---: |"]
        for s in m.screen:
            mark = " (A)" if s["id"] == a.id else (" (B)" if s["id"] == b.id else "")
            lines.append(f"| {s['name']}{mark} | `{s['key']}` | {s[MOTION_PRIMARY]:.3f} | {s[WRINKLE_PRIMARY]:.4f} |")
        lines += [""]
    lines += [
        "## Definitions", "",
        "- Lip aperture: mean height (Z) of the inner upper lip's midline vertices minus that of the inner",
        "  lower lip's, relative to the neutral face, in mm (vertex sets from the template's lip mask and",
        "  its jawOpen unit: lower-lip vertices drop with the jaw, upper-lip vertices do not).",
        "  `lip_aperture_std_mm`: its standard deviation over time; `_p95_mm`: its 95th percentile.",
        "- `mouth_mean_abs_offset_mm`: mean length of the lip vertices' offsets over frames.",
        "- `jaw_std_mm`: standard deviation over time of the chin's vertical offset (vertices moving",
        "  > 90 % of jawOpen's largest displacement).",
        "- `crease_depth`: mean over frames of 1 - ratio (mean of R, G, B) weighted by the dataset's crease",
        "  regions (forehead, glabella, crow's feet, nasolabial, lips; the strongest at each texel);",
        "  `forehead_depth`: the forehead region only; `crease_depth_p95`: 95th percentile over frames.",
        f"- PASS needs: speaking share of `{MOTION_PRIMARY}` >= {SHARE_THRESHOLD}, of `{WRINKLE_PRIMARY}` <= "
        f"{1 - SHARE_THRESHOLD:.2f}, and both main effects >= {MIN_RELATIVE_EFFECT:.0%} of the statistic's mean",
        "  (A and B really differ).",
        "- Why the split is expected: the denoiser predicts latents minus the style pivots and never sees",
        "  them; the pivots are added back per stream (speaking to the motion latent, wrinkle to the",
        "  wrinkle latent), and the two streams have separate decoders. The table measures that the",
        "  decoded output honours this and how large the style difference is.",
        "",
    ]
    return "\n".join(lines)


def _repo_relative(path: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


# --------------------------------------------------------------------------------------------
# Picture


def render_grid(measurement: SwapMeasurement, *, audio: Path, work: Path, out_png: Path, fps: float,
                resolution: int, samples: int, seed: int, steps: int, device: str = "AUTO",
                closeups: bool = True, max_bytes: int = 900_000, log=print) -> dict:
    """2x2 Cycles renders (rows speaking A/B, columns wrinkle A/B) of frame `frame_index`,
    generated through the add-on: the demo scene for (A, A), then `api.generate` for the others
    (a re-run replaces the add-on's keys and wrinkle material). With `closeups`, each portrait
    has a close-up of the crease regions where the wrinkle styles differ most under it."""
    from tools.showcase_common import (CLOSEUP_GROUPS, add_closeup_camera, closeup_group_of, compose_rows,
                                 generate_scene, labelled_tile, map_picture, render_array, save_png,
                                 showcase_look, strongest_region, wrinkle_region_maps)

    a, b = measurement.styles["A"], measurement.styles["B"]
    bpy, scene, head, summary = generate_scene(work, audio, fps=fps, resolution=resolution, samples=samples,
                                               steps=steps, seed=seed, speaking_style=a.key,
                                               wrinkle_style=a.key, device=device)
    from textalker_blender.blender import api

    showcase_look(bpy, scene, head, resolution=resolution, samples=samples)
    portrait_camera = scene.camera
    # Close up on the crease regions where the two wrinkle styles differ most.
    group = closeup_group_of(strongest_region([measurement.per_frame["A", w]["maps"] for w in "AB"],
                                              wrinkle_region_maps(measurement.per_frame["A", "A"]["maps"].shape[1])))
    closeup_camera = add_closeup_camera(bpy, scene, head, aspect=2.0, group=group) if closeups else None
    strip = scene.sequence_editor.strips_all[0]
    frame = int(summary["frame_range"][0]) + measurement.frame_index
    infos = measurement.styles
    tiles = {}
    started = time.perf_counter()
    for speaking, wrinkle in COMBINATIONS:
        if (speaking, wrinkle) != ("A", "A"):
            api.generate(head, strip, speaking_style=infos[speaking].key, wrinkle_style=infos[wrinkle].key,
                         device=device.lower(), steps=steps or None, seed=seed, scene=scene)
        picture = render_array(bpy, scene, frame, work / f"swap_{speaking}{wrinkle}.png")
        if closeup_camera is not None:
            # The close-up below the portrait, as wide: the creases at a readable size.
            scene.camera = closeup_camera
            scene.render.resolution_y = max(2, resolution // 2)
            closeup = render_array(bpy, scene, frame, work / f"swap_{speaking}{wrinkle}_closeup.png")
            scene.camera = portrait_camera
            scene.render.resolution_y = resolution
            picture = np.concatenate([picture, closeup], axis=0)
        # Beside it, the wrinkle map of this frame over the crease regions (the pipeline's output
        # for this combination; the render shows the same maps on the skin).
        ratio = map_picture(measurement.per_frame[speaking, wrinkle]["maps"][measurement.frame_index].astype(np.float32),
                            measurement.crease_crop, picture.shape[0] // 2)
        column = np.ones((picture.shape[0], ratio.shape[1] + 4, 3), np.float32) * 0.04
        column[: ratio.shape[0], 4:] = ratio[: picture.shape[0]]
        picture = np.concatenate([picture, column], axis=1)
        stats = measurement.table[speaking, wrinkle]
        per_frame = measurement.per_frame[speaking, wrinkle]
        index = measurement.frame_index
        tiles[speaking, wrinkle] = labelled_tile(picture, [
            f"speaking {speaking} + wrinkle {wrinkle}   (right: wrinkle map, 1-(1-ratio)x4)",
            f"mouth {per_frame['aperture'][index]:.1f} mm, crease {100 * per_frame['depth'][index]:.1f} %",
            f"clip: aperture std {stats[MOTION_PRIMARY]:.2f} mm, depth {100 * stats[WRINKLE_PRIMARY]:.2f} %",
        ])
        log(f"rendered speaking {speaking} + wrinkle {wrinkle} at frame {frame}")
    render_s = time.perf_counter() - started
    title = (f"Speaking A/B (rows) x wrinkle A/B (columns), frame {frame}. A: {a.name}. B: {b.name}")
    sheet = compose_rows([[tiles["A", "A"], tiles["A", "B"]], [tiles["B", "A"], tiles["B", "B"]]],
                         title=title, font_size=13)
    saved = save_png(sheet, out_png, max_bytes=max_bytes)
    return {"frame": frame, "png": str(out_png), "size": list(sheet.size), **saved, "render_s": round(render_s, 1),
            "denoised": bool(scene.cycles.use_denoising), "closeup": CLOSEUP_GROUPS[group][1] if closeups else None}


# --------------------------------------------------------------------------------------------
# CLI


def _render_note(args, grid: dict | None) -> str:
    if not grid:
        return ""
    note = f"{args.resolution} px, {args.samples} samples"
    note += ", denoised (OpenImageDenoise)." if grid.get("denoised") else "."
    if grid.get("closeup"):
        note += (f" Under each portrait: the {grid['closeup']} close up (the crease regions where the two"
                 " wrinkle styles differ most).")
    note += (" Right of each: that frame's wrinkle map over the crease regions, drawn as"
             " 1 - 4 x (1 - ratio) so faint creases show (white = unchanged skin).")
    return note


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for STYLE.md and style_swap.png")
    parser.add_argument("--audio", type=Path, default=None, help="speech file (default: bundled sample)")
    parser.add_argument("--weights", type=Path, default=None, help="weights file (default: bundled)")
    parser.add_argument("--styles", nargs=2, default=None, metavar=("A", "B"), help="style keys or ids")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=0, help="sampler steps (0: model default)")
    parser.add_argument("--fps", type=float, default=24.0)
    parser.add_argument("--screen-seconds", type=float, default=3.0, help="audio used to screen the styles")
    parser.add_argument("--resolution", type=int, default=320, help="pixels per render (square)")
    parser.add_argument("--samples", type=int, default=16, help="Cycles samples per pixel")
    parser.add_argument("--device", default="AUTO", choices=["AUTO", "CUDA", "CPU"])
    parser.add_argument("--work", type=Path, default=None,
                        help="scratch folder for the .blend, EXRs and raw renders (default: a temp folder)")
    parser.add_argument("--no-render", action="store_true", help="measure and write STYLE.md only")
    parser.add_argument("--no-closeups", action="store_true", help="portraits only, no forehead close-ups")
    parser.add_argument("--markdown-name", default="STYLE.md")
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    import tempfile

    import torch

    torch.set_num_threads(max(1, min(torch.get_num_threads(), 2)))
    from textalker_blender.core.pipeline import Pipeline

    from textalker_blender.blender import catalog  # bpy-free module: the add-on's sample audio

    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    audio = (args.audio or catalog.SAMPLE_SPEECH_PATH).resolve()
    pipeline = Pipeline.load(args.weights, device=args.device.lower())
    styles = None
    if args.styles:
        styles = tuple(int(s) if s.isdigit() else s for s in args.styles)
    measurement = measure(pipeline, str(audio), styles=styles, seed=args.seed, steps=args.steps or None,
                          fps=args.fps, screen_seconds=args.screen_seconds)
    command = ".venv/bin/python tools/style_swap.py " + " ".join(
        shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    picture, grid = None, None
    if not args.no_render:
        work = (args.work or Path(tempfile.mkdtemp(prefix="textalker-style-swap-"))).resolve()
        work.mkdir(parents=True, exist_ok=True)
        grid = render_grid(measurement, audio=audio, work=work, out_png=out / "style_swap.png", fps=args.fps,
                           resolution=args.resolution, samples=args.samples, seed=args.seed, steps=args.steps,
                           device=args.device, closeups=not args.no_closeups)
        picture = "style_swap.png"
    markdown = style_markdown(measurement, command=command, pipeline=pipeline, audio=audio, seed=args.seed,
                              steps=args.steps, picture=picture,
                              render_note=_render_note(args, grid))
    (out / args.markdown_name).write_text(markdown)
    summary = {
        "styles": {k: {"id": v.id, "key": v.key, "name": v.name} for k, v in measurement.styles.items()},
        "table": {f"{s}{w}": v for (s, w), v in measurement.table.items()},
        "effects": measurement.effects,
        "passed": measurement.passed,
        "reasons": measurement.reasons,
        "frame_index": measurement.frame_index,
        "n_frames": measurement.n_frames,
        "trained": pipeline.trained,
        "weights_sha256": pipeline.weights_sha256,
        "markdown": str(out / args.markdown_name),
        "grid": grid,
        "timings": {k: round(v, 1) for k, v in measurement.timings.items()},
    }
    print(json.dumps({k: v for k, v in summary.items() if k != "table"}, indent=2))
    print(("PASS" if measurement.passed else "FAIL")
          + ": motion follows the speaking pivot, wrinkles follow the wrinkle pivot")
    return summary


if __name__ == "__main__":
    main()
