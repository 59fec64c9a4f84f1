"""docs/RESULTS.md from the results dictionary of tools/evaluate.py.

Everything on the page is computed from that dictionary (`render_markdown` is a pure function), so
the tables, the "done when" verdicts and the set-up they were measured with cannot drift apart.
"""
from __future__ import annotations

import math
from pathlib import Path

TEXTALKER = "TexTalker (ours)"
REGRESSOR = "FaceFormer-like"  # the "regressor" baseline for test-B
ABLATION_NAMES = ("motion-only", "wrinkle-only", "joint-codebook", "one-hot")
# the same ablations as ModelConfig.ablation names them
ABLATION_KINDS = {"motion-only": "motion_only", "wrinkle-only": "wrinkle_only", "joint-codebook": "joint_codebook",
                  "one-hot": "onehot"}

SPLIT_TITLES = {"test-A": "test-A (seen subjects, unseen sentences)", "test-B": "test-B (unseen subjects)",
                "test-A-phone": "test-A over a telephone line (300-3400 Hz, 8 kHz codec; same faces as test-A)"}
# (key in the results, header in the paper's units, factor from our unit, lower is better)
PAPER_COLUMNS = (
    ("lve_mm2", "LVE ↓ (10⁻² mm²)", 100.0, True),
    ("mve_mm", "MVE ↓ (10⁻² mm)", 100.0, True),
    ("fdd_mm2", "FDD ↓ (10⁻³ mm²)", 1000.0, True),
    ("psnr_db", "PSNR ↑ (dB)", 1.0, False),
    ("ssim", "SSIM ↑", 1.0, False),
)
DETAIL_COLUMNS = (
    ("lve_mm2", "LVE (mm²)", 4), ("lve_mm", "LVE unsquared (mm)", 3), ("mve_mm", "MVE (mm)", 4),
    ("fdd_mm2", "FDD (mm²)", 5), ("fdd_signed_mm2", "FDD signed (mm²)", 5),
    ("fold_mae", "crease fold MAE", 4), ("crease_height_mae_mm", "crease height MAE (mm)", 4),
    ("s_per_audio_s", "s per audio s", 3),
)


def number(value, digits: int = 3) -> str:
    if value is None:
        return "—"
    value = float(value)
    if math.isnan(value):
        return "—"
    if math.isinf(value):
        return "inf"
    return f"{value:.{digits}f}"


def _finite(value) -> bool:
    return value is not None and isinstance(value, (int, float)) and math.isfinite(float(value))


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def _digits(value: float) -> int:
    magnitude = abs(value)
    return 2 if magnitude >= 10 else 3 if magnitude >= 0.1 else 4


def _method_rows(methods: dict, columns=PAPER_COLUMNS) -> list[list[str]]:
    """Rows of the paper-style table with the best value of each column in bold."""
    best = {}
    for key, _, _, lower in columns:
        values = [m[key] for m in methods.values() if _finite(m.get(key))]
        if values:
            best[key] = min(values) if lower else max(values)
    rows = []
    for name, entry in methods.items():
        row = [f"**{name}**" if entry.get("kind") == "textalker" else name]
        for key, _, factor, _ in columns:
            value = entry.get(key)
            if not _finite(value):
                row.append("inf" if value is not None and math.isinf(float(value)) else "—")
                continue
            text = number(value * factor, _digits(value * factor))
            row.append(f"**{text}**" if key in best and value == best[key] and len(methods) > 1 else text)
        rows.append(row)
    return rows


# ------------------------------------------------------------------------------------------------
# Done-when verdicts (issue #6): computed, never written by hand


def _beats(ours: dict, other: dict, key: str, lower: bool) -> bool | None:
    a, b = ours.get(key), other.get(key)
    if not (_finite(a) and _finite(b)):
        return None
    return a < b if lower else a > b


def _versus(ours: dict, others: dict, key: str, lower: bool) -> tuple[bool | None, str]:
    verdicts, parts = [], []
    for name, entry in others.items():
        verdict = _beats(ours, entry, key, lower)
        if verdict is None:
            continue
        verdicts.append(verdict)
        parts.append(f"{name} {number(entry[key], 5)} ({'beaten' if verdict else 'NOT beaten'})")
    if not verdicts:
        return None, "nothing to compare"
    return all(verdicts), f"ours {number(ours.get(key), 5)} vs " + "; ".join(parts)


def done_when_checks(results: dict) -> list[dict]:
    """[{check, result (True / False / None = not decidable), detail}] for issue #6's criteria."""
    checks = []
    missing = [m["name"] for m in results.get("learned_missing", [])]
    for split in ("test-A", "test-B"):
        methods = results.get("splits", {}).get(split)
        if not methods or TEXTALKER not in methods:
            continue
        ours = methods[TEXTALKER]
        if split == "test-A":
            motion_baselines = {n: m for n, m in methods.items() if m.get("kind") in ("baseline", "learned")
                                and m.get("motion")}
            for key, label in (("lve_mm2", "LVE"), ("fdd_mm2", "FDD")):
                verdict, detail = _versus(ours, motion_baselines, key, lower=True)
                if missing:
                    detail += f"; not evaluated (not trained): {', '.join(missing)}"
                    verdict = False if verdict is not None else None
                checks.append({"check": f"test-A: TexTalker beats every baseline on {label} (mm², lower is better)",
                               "result": verdict, "detail": detail})
            static = {n: m for n, m in methods.items() if m.get("kind") == "baseline" and m.get("texture")}
            verdict, detail = _versus(ours, static, "psnr_db", lower=False)
            checks.append({"check": "test-A: TexTalker beats the texture baselines (static; style mean without "
                                    "audio) on PSNR (dB, higher is better)",
                           "result": verdict, "detail": detail})
            if "crease_height_mae_mm" in ours:
                verdict, detail = _versus(ours, static, "crease_height_mae_mm", lower=True)
                checks.append({"check": "test-A: TexTalker beats the texture baselines (static; style mean without "
                                        "audio) on crease height error (mm, lower is better)",
                               "result": verdict, "detail": detail})
        else:
            targets = {n: m for n, m in methods.items()
                       if (m.get("kind") == "baseline" and m.get("motion")) or n == REGRESSOR}
            for key, label in (("lve_mm2", "LVE"), ("fdd_mm2", "FDD")):
                verdict, detail = _versus(ours, targets, key, lower=True)
                if REGRESSOR in missing:
                    detail += f"; {REGRESSOR} not evaluated (not trained)"
                    verdict = False if verdict is not None else None
                checks.append({"check": f"test-B: TexTalker beats mean-face and the regressor ({REGRESSOR}) on {label}",
                               "result": verdict, "detail": detail})
    ablations = results.get("ablations", {}).get("evaluated", {})
    ablation_split = (results.get("ablations", {}).get("splits") or ["test-A"])[0]
    methods = results.get("splits", {}).get(ablation_split, {})
    # Like with like: an evaluated full-model bundle trained with the ablations' budget (config
    # ablation None, e.g. train_ablations.py's "reference") is the joint model of the comparison;
    # only without one is the shipped, longer-trained bundle compared, and the check says so.
    reference = same_budget_reference(results)
    ours = methods.get(reference, {}) if reference else methods.get(TEXTALKER, {})
    joint_label = (f"the same-budget joint model ({reference})" if reference
                   else "the joint model (the shipped bundle: NOT the ablations' training budget)")
    # Only bundles with an ablation switch are the paper's ablations; other full-model bundles
    # (a previous bundle, a training variant) are compared in the tables, not judged here.
    paper_ablations = {name: info for name, info in ablations.items() if info.get("ablation")}
    for name, info in paper_ablations.items():
        entry = methods.get(name)
        if entry is None or name == reference:
            continue
        kind = info.get("ablation") or name
        keys = [k for k, flag in (("lve_mm2", info.get("motion")), ("mve_mm", info.get("motion")),
                                  ("psnr_db", info.get("texture")), ("ssim", info.get("texture"))) if flag]
        verdicts, parts = [], []
        for key in keys:
            verdict = _beats(ours, entry, key, lower=key in ("lve_mm2", "mve_mm"))
            if verdict is not None:
                verdicts.append(verdict)
                parts.append(f"{key} ours {number(ours.get(key), 5)} vs {number(entry.get(key), 5)}")
        checks.append({"check": f"{ablation_split}: {joint_label} beats the ablation {name} ({kind})",
                       "result": all(verdicts) if verdicts else None, "detail": "; ".join(parts) or "—"})
    if not paper_ablations:
        checks.append({"check": "the joint model beats motion-only and wrinkle-only (paper's ablation)",
                       "result": None, "detail": "ablation bundles not evaluated (not yet trained)"})
    return checks


def same_budget_reference(results: dict) -> str | None:
    """Name of the evaluated bundle that is the full model trained with the ablations' budget
    (train_ablations.py's "reference"), if any; other full-model bundles (a previous bundle, a
    training variant) are not a same-budget reference."""
    evaluated = results.get("ablations", {}).get("evaluated", {})
    names = [name for name, info in evaluated.items() if not info.get("ablation")]
    return "reference" if "reference" in names else None


def _training_record(model: dict) -> str:
    """The weights' `dataset` metadata and the headline of their `training` record (the whole
    record is in the --json output)."""
    import json

    text = str(model.get("dataset") or "—")
    training = model.get("training")
    if training:
        try:
            record = json.loads(training)
        except ValueError:
            record = None
        if isinstance(record, dict):
            keys = [k for k in ("step", "ldm_step", "motion_vq_step", "wrinkle_vq_step", "ema_decay") if k in record]
            summary = ", ".join(f"{k} {json.dumps(record[k])[:80]}" for k in keys) or f"{len(record)} fields"
        else:
            summary = str(training)[:160]
        text += f"; training: {summary}"
    return text


def _verdict(result: bool | None) -> str:
    return "**true**" if result is True else "**false**" if result is False else "not decidable"


# ------------------------------------------------------------------------------------------------
# The page


def render_markdown(results: dict) -> str:
    model, dataset, hardware = results["model"], results["dataset"], results["hardware"]
    lines = ["# Results: TexTalker on the synthetic TexTalk4D", "",
             "*Written by `tools/evaluate.py`; do not edit by hand.*", "",
             "> **SYNTHETIC DATA.** Every number on this page is measured on the **synthetic** TexTalk4D built by "
             "`tools/make_dataset.py` (flite, Festival and espeak-ng voices in 13 languages, rule-based face-unit motion, procedural creases; "
             "docs/DATASET.md), not on the paper's TexTalk4D scans. They are not comparable with the paper's tables.",
             ""]
    if not model.get("trained"):
        lines += ["> **UNTRAINED WEIGHTS.** The evaluated bundle says `trained=false`: its numbers only show "
                  "that the evaluation runs end to end. Re-run the command below after training.", ""]
    if results.get("max_utterances"):
        lines += [f"> **Subset run**: at most {results['max_utterances']} utterances per split "
                  "(`--max-utterances`).", ""]

    sizes = results.get("sizes", {})
    lines += ["## Set-up", ""]
    size_text = "; ".join(f"{split}: {s['utterances']} of {s['all_utterances']} utterances, {s['frames']} frames, "
                          f"{s['audio_seconds'] / 60:.2f} min" for split, s in sizes.items())
    estimate = results.get("estimated_s")
    rows = [
        ["command", f"`{results['command']}`"],
        ["date", results["date_utc"]],
        ["wall time", f"{results['wall_s'] / 60:.1f} min" + (f" (estimated at the start: {estimate / 60:.1f} min)"
                                                              if estimate else "")],
        ["weights", f"`{Path(model['weights']).name}`, preset `{model['preset']}`, trained={str(model['trained']).lower()}, "
                    f"{model['styles']} styles"],
        ["weights SHA-256", f"`{model['sha256']}` (manifest: "
                            + ("matches" if model.get("manifest_sha256") == model["sha256"]
                               else f"`{model.get('manifest_sha256')}`") + ")"],
        ["training record", _training_record(model)],
        ["sampler", f"DDIM {model['steps']} steps (eta 0) of a {model['diffusion_steps']}-step schedule, "
                    f"{dataset['fps']} fps"],
        ["blinks", "a blink track per utterance, sampled at the speaking style's blink rate measured on the training "
                   "data (unseen subject: the mean over styles), seeded by the diffusion seed and the audio; the model draws the blinks "
                   "it is told about (`core/blinks.py`, `ModelConfig.blink_condition`). No blink timing comes from "
                   "the ground truth" if model.get("blink_condition") else
                   "no blink input: blinks come only from what the denoiser learned from the audio"],
        ["brow emphasis", "a brow track per utterance: emphases on the audio's longest-held syllable nuclei at the "
                          "speaking style's rate measured on the training data, seeded like the blinks; the model "
                          "draws the brows and forehead it is told about (`core/brows.py`, "
                          "`ModelConfig.brow_condition`). No brow timing comes from the ground truth"
                          if model.get("brow_condition") else
                          "no brow input: brow raises come only from what the denoiser learned from the audio"],
        *([["lip seal", f"the default {model['lip_seal_mm']:g} mm (`core/lip_seal.py`): near-closures of the decoded "
                        "lips pressed shut, "
                        + ("scaled per frame by the weights' closure detector (`core/closure.py`), which hears "
                           "from the audio where the lips are shut" if model.get("closure_detector")
                           else "on every frame alike (the weights have no closure detector)")]]
          if model.get("lip_seal_mm") else []),
        ["dataset", f"`{dataset['name']}` format {dataset['format_version']}, seed {dataset['seed']}, "
                    f"fingerprint `{dataset['fingerprint']}` (SHA-256 of meta.json, utterances.json, subjects/*.json)"],
        ["test sets", size_text],
        ["seeds", f"diffusion seed {results['seeds']['diffusion']} for every utterance; learned baselines seed "
                  f"{results['seeds']['learned_baselines']}"],
        ["hardware", f"{hardware['cpu']}, {hardware['cores']} cores, torch {hardware['torch']} with "
                     f"{hardware['torch_threads']} thread(s) on {hardware['device']}, Python {hardware['python']}; "
                     f"load average {hardware['load_average_start'][0]} at the start, "
                     f"{hardware['load_average_end'][0]} at the end (shared machine: timings vary with load)"],
    ]
    lines += _table(["", ""], rows) + [""]

    lines += ["## Definitions and units", "",
              "- Motion: vertex offsets from the subject's neutral face in metres, 30 fps, on the template head's "
              "4,418 vertices; masks from `assets/template_head.npz` (lips for LVE, face for MVE, upper face for FDD).",
              "- **LVE** (FaceFormer / CodeTalker): per frame the maximum over lip vertices of the **squared** L2 "
              "error, averaged over all frames of the split pooled (torchmetrics `lip_vertex_error` per sequence, "
              "frame-weighted). Its unit is mm²; the paper's table labels LVE \"10⁻² mm\" but computes the same "
              "squared quantity, so the main table gives it in 10⁻² mm² (= mm² x 100). The unsquared per-frame "
              "maximum lip error (mm) is in the detail table.",
              "- **MVE** (FaceDiffuser): mean unsquared L2 error over frames and face vertices; main table in "
              "10⁻² mm (= mm x 100), as the paper.",
              "- **FDD** (CodeTalker): per upper-face vertex the standard deviation over time of its squared "
              "displacement from the neutral, averaged over upper-face vertices: dynamics(ground truth) - "
              "dynamics(prediction) per sequence. Main table: the mean over sequences of its absolute value in "
              "10⁻³ mm² (= mm² x 1000; the paper labels it 10⁻³ mm); the detail table adds CodeTalker's signed "
              "mean (positive = less upper-face motion than the ground truth).",
              "- **PSNR / SSIM**: of the frame's albedo in UV space, reconstructed as neutral albedo x wrinkle "
              "ratio and quantised to 8 bits, against the ground truth reconstructed the same way, over the "
              "texels of the face mask of the wrinkle map (BasicSR convention; SSIM with torchmetrics' 11x11 "
              "Gaussian window, sigma 1.5, its SSIM map averaged over the face texels). PSNR pools the error over "
              "the frames of a sequence (per-frame PSNR is infinite on frames without creases); both are "
              "averaged over sequences.",
              f"- **LPIPS**: {results['lpips']}",
              "- Best value of each column in bold. '—': the method makes no such output.", ""]

    choices = results.get("style_choices", {})
    if choices:
        hows = {}
        for subject, choice in sorted(choices.items()):
            hows.setdefault(choice["how"], []).append(subject)
        lines += ["Styles used by TexTalker (speaking and wrinkle pivot alike):", ""]
        lines += [f"- {how}: {', '.join(subjects)}" for how, subjects in hows.items()]
        lines += [""]

    lines += ["## Motion and texture", ""]
    for split, methods in results.get("splits", {}).items():
        size = sizes.get(split, {})
        lines += [f"### {SPLIT_TITLES.get(split, split)}: {size.get('utterances')} utterances, "
                  f"{size.get('frames')} frames", ""]
        main = {n: m for n, m in methods.items() if m.get("kind") != "ablation"}
        lines += _table(["Method", *[c[1] for c in PAPER_COLUMNS]], _method_rows(main)) + [""]
        detail_rows = []
        for name, entry in methods.items():
            detail_rows.append([name, *[number(entry.get(key), d) if entry.get("motion") or key == "s_per_audio_s"
                                        else "—" for key, _, d in DETAIL_COLUMNS], entry.get("note", "")])
        lines += ["Details (mm / mm²; time = wall seconds per second of audio on this machine):", ""]
        lines += _table(["Method", *[c[1] for c in DETAIL_COLUMNS], "note"], detail_rows) + [""]
    missing = results.get("learned_missing", [])
    if missing:
        lines += ["Learned baselines not in the tables:", ""]
        lines += [f"- **{m['name']}**: {m['reason']}. Train it with `{m['command']}`, then re-run the command above."
                  for m in missing]
        lines += [""]

    lines += ["## Done-when check (issue #6)", "",
              "Computed from the numbers above by `tools/evaluation/report.py`; \"true\" only when every "
              "comparison holds.", ""]
    lines += _table(["criterion", "result", "numbers"],
                    [[c["check"], _verdict(c["result"]), c["detail"]] for c in done_when_checks(results)]) + [""]

    lines += _arkit_section(results) + _sweep_section(results) + _ablation_section(results)
    lines += ["## Reproduce", "", "```", results["command"], "```", "",
              "Options: `--max-utterances N` (evenly spaced per split), `--threads`, `--skip-sampler-sweep`, "
              "`--sweep-steps`, `--sweep-utterances`, `--ablation NAME=PATH`, `--json FILE` (every number).", ""]
    return "\n".join(lines)


def _arkit_section(results: dict) -> list[str]:
    lines = ["## ARKit output accuracy (issue #9)", "",
             "`core.arkit.solve_arkit_weights` (bounded [0, 1], temporally smoothed, 30 fps) per utterance, then "
             "`core.arkit.arkit_fit_errors` over the face vertices. *Ground truth*: solved from the dataset's "
             "offsets; weight error against the 52 face-unit weights the dataset was built from (ARKit order). "
             "*TexTalker*: solved from the generated motion; vertex error of the reconstruction against that "
             "motion (no ground-truth weights exist for it). Vertex errors in mm, frame-weighted.", ""]
    rows = []
    for split, entry in results.get("arkit", {}).items():
        for kind, label in (("ground_truth", "ground-truth offsets"), ("generated", "TexTalker motion")):
            e = entry.get(kind) or {}
            if not e:
                continue
            rows.append([split, label, str(e["frames"]), number(e.get("weight_mae"), 4), number(e.get("weight_rmse"), 4),
                         number(e.get("weight_max"), 3), number(e["vertex_mean_mm"], 4), number(e["vertex_rmse_mm"], 4),
                         number(e["vertex_max_mm"], 3), number(e["solve_ms_per_frame"], 3),
                         number(e["iterations_mean"], 1)])
    lines += _table(["split", "solved from", "frames", "weight MAE", "weight RMSE", "weight max", "vertex mean (mm)",
                     "vertex RMSE (mm)", "vertex max (mm)", "solve ms/frame", "ADMM iterations"], rows) + [""]
    return lines


def _sweep_section(results: dict) -> list[str]:
    sweep = results.get("sweep", {})
    lines = ["## Sampler steps against quality and time (issue #6 item 4)", ""]
    if sweep.get("skipped") or not sweep.get("rows"):
        return lines + ["Not run (`--skip-sampler-sweep`).", ""]
    lines += [f"TexTalker on {len(sweep['utterances'])} test-A utterances ({sweep['frames']} frames, evenly spaced), "
              "same seed and styles as above, DDIM (eta 0, trailing timesteps) with the given number of steps. The "
              "full-chain row runs DDIM over every timestep of the training schedule: deterministic, not the "
              "stochastic DDPM ancestral sampler (the core has none). Time = wall seconds per second of audio "
              "(whole generation: audio features, diffusion, VQ decoding), and the diffusion part alone; "
              "1 utterance at a time on this machine's CPU. No SSIM here (it costs more than generating).", ""]
    if any(row["steps"] == "vq" for row in sweep["rows"]):
        lines += ["Row *VQ bound*: the same utterances' ground-truth motion and wrinkle maps encoded by the bundle's "
                  "own VQ autoencoders and decoded exactly as generation decodes (no audio, no diffusion): what a "
                  "perfect latent diffusion model would reach. A metric where TexTalker sits at this bound is limited "
                  "by the autoencoder, not by the diffusion model or its sampler. Its time includes rendering the "
                  "ground-truth maps.", ""]
    if results.get("model", {}).get("blink_condition"):
        lines += ["With sampled blinks, a clip's FDD mostly says whether its sampled blinks and its true ones "
                  "happen to be as many (a 3-s clip holds about one blink), so on 10 utterances the absolute FDD "
                  "is noisy; the signed column shows whether the model moves the upper face too little (> 0) or "
                  "too much (< 0) on average. The full test sets above give the FDD to compare.", ""]
    rows = []
    for row in sweep["rows"]:
        label = ("VQ bound" if row["steps"] == "vq"
                 else f"{row['steps']}" + (" (full chain)" if row.get("full_chain") else ""))
        rows.append([label, number(row.get("lve_mm2"), 4), number(row.get("mve_mm"), 4), number(row.get("fdd_mm2"), 5),
                     number(row.get("fdd_signed_mm2"), 5), number(row.get("psnr_db"), 2), number(row["s_per_audio_s"], 3),
                     number(row["diffusion_s_per_audio_s"], 4)])
    lines += _table(["steps", "LVE (mm²)", "MVE (mm)", "FDD (mm²)", "FDD signed (mm²)", "PSNR (dB)", "s per audio s",
                     "diffusion s per audio s"], rows) + [""]
    return lines


def _changed_options(info: dict) -> str:
    """'generation option lip_seal_mm=0' for a bundle evaluated with changed generation options."""
    options = info.get("options") or {}
    return ", ".join(f"generation option {key}={value:g}" if isinstance(value, float) else
                     f"generation option {key}={value}" for key, value in options.items())


def _ablation_section(results: dict) -> list[str]:
    ablations = results.get("ablations", {})
    evaluated = ablations.get("evaluated", {})
    split = (ablations.get("splits") or ["test-A"])[0]
    lines = ["## Ablations", ""]
    if evaluated:
        methods = results.get("splits", {}).get(split, {})
        table = {}
        if TEXTALKER in methods:
            table["Full (TexTalker)"] = {**methods[TEXTALKER], "kind": "textalker"}
        for name in evaluated:
            if name in methods:
                table[name] = methods[name]
        lines += [f"On {SPLIT_TITLES.get(split, split)}, same utterances, seed and style choice as above.", ""]
        lines += _table(["Variant", *[c[1] for c in PAPER_COLUMNS]], _method_rows(table)) + [""]
        rows = [[name, info.get("ablation") or _changed_options(info) or "—", f"`{info['sha256'][:16]}…`",
                 "yes" if info.get("verified") else "no (not in a manifest)", str(info.get("trained")).lower()]
                for name, info in evaluated.items()]
        lines += _table(["bundle", "config ablation or generation option", "SHA-256", "manifest-verified", "trained"], rows) + [""]
        reference = same_budget_reference(results)
        failed = [c for c in done_when_checks(results)
                  if c["check"].startswith(f"{split}: the same-budget") and c["result"] is False]
        if reference:
            lines += [f"The ablation verdicts in the done-when table compare each ablation with `{reference}`, the full "
                      "model trained with the same step budget and sampler; the shipped bundle (row *Full*) was trained "
                      "longer and is shown for scale only.", ""]
        if failed:
            lines += ["**Where the joint model does not win.** " + "; ".join(
                c["check"].split(" beats the ablation ")[1] + ": " + c["detail"] for c in failed) + ".", ""]
        if any("(motion_only)" in c["check"] for c in failed):
            lines += ["Why motion-only may win here: two facts of this set-up bear on it. (1) The synthetic dataset computes each frame's wrinkle map from the "
                "surface strain of that frame's motion and the subject's wrinkle style (docs/DATASET.md), so the texture carries no "
                "information that the motion and the style lack: the paper's argument for modelling both together (wrinkles as evidence of "
                "expression, measured independently on real scans) has nothing to work with here. (2) With the same "
                "denoiser width and step budget, the motion-only model fits 256 latent dimensions where the joint "
                "model fits 512, which may matter at a short budget (not measured separately). The paper's ordering is "
                "therefore not reproduced on this data; whether it appears with a longer budget or real scans is "
                "not measured.", ""]
    # an ablation counts as evaluated under its display name or its config kind (core.config)
    kinds = {n for n in evaluated} | {str(info.get("ablation")) for info in evaluated.values()}
    missing = [n for n in ABLATION_NAMES if not kinds & {n, ABLATION_KINDS[n]}]
    if missing:
        lines += [f"Not yet trained / not evaluated: {', '.join(missing)}. Evaluate a trained bundle with "
                  "`.venv/bin/python tools/evaluate.py ... --ablation NAME=PATH.safetensors` (repeatable; training: "
                  "docs/TRAINING.md).", ""]
    return lines


def write_results(results: dict, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_markdown(results))
    return path
