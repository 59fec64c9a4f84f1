"""docs/REAL_SPEECH.md, written from the results of tools/real_speech_check.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .checks import (
    BILABIAL_AFTER_S,
    BILABIAL_BEFORE_S,
    CHECK_NAMES,
    LOUD_MARGIN_DB,
    MIN_PASS_RATE,
    SILENCE_MARGIN_S,
    TARGET_SPEECH_DBFS,
    Thresholds,
    clip_passes,
    evaluate,
    pass_rates,
    set_passes,
)
from .measures import FILL_GAP_S, MIN_SPEECH_S, SPEECH_THRESHOLD_DBFS
from .reference import summarise

CHECK_RULES = {
    "silence_closed": "deep-silence median aperture <= {silence_max_mm} mm",
    "speech_open": "speech p90 aperture >= {speech_open_min_mm} mm",
    "speech_vs_silence": "loud-vs-silence AUC >= {auc_min}",
    "bilabial_closure": "every bilabial window's minimum aperture <= {bilabial_max_mm} mm",
}
THRESHOLD_RULES = {
    "silence_max_mm": "95th percentile over test-A utterances of the ground truth's deep-silence median",
    "speech_open_min_mm": "10th percentile of the ground-truth aperture at open-vowel (/aa ae ah ao/) centres",
    "auc_min": "5th percentile over test-A utterances of the ground truth's loud-vs-silence AUC",
    "bilabial_max_mm": "rest aperture (neutral template) + 1 mm; the ground truth presses the lips "
                       "past touching (its window minima: see the reference table)",
}


def _fmt(value, digits: int = 2) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "pass" if value else "**FAIL**"
    return f"{value:.{digits}f}"


def _verdict(passed) -> str:
    return "n/a" if passed is None else ("pass" if passed else "**FAIL**")


def _pass_rate(stats, thresholds: Thresholds, name: str) -> str:
    verdicts = [evaluate(s, thresholds)[name].passed for s in stats]
    applicable = [v for v in verdicts if v is not None]
    if not applicable:
        return "n/a"
    return f"{sum(applicable)}/{len(applicable)} ({100 * sum(applicable) / len(applicable):.0f} %)"


def write_report(path: Path, *, weights: dict, results: list, thresholds: Thresholds,
                 recomputed: Thresholds | None, reference, alignment: dict | None,
                 diagnostics: dict | None, plot_path: Path | None, equalised: list | None = None, command: str,
                 timings: dict, machine: str, template_info: dict) -> Path:
    lines: list[str] = []
    add = lines.append
    passed = [r.passed for r in results]
    n_pass = sum(1 for p in passed if p)
    applicable = sum(1 for p in passed if p is not None)
    add("# Real human speech: do the lips follow real voices?")
    add("")
    add("*Written by `tools/real_speech_check.py`; do not edit by hand.*")
    add("")
    add("The bundled model is trained on synthetic flite voices (docs/DATASET.md). This page runs it on")
    add("real human recordings that install offline and checks that the mouth is closed in silence,")
    add("opens on speech and closes on /p b m/ where the timing is known, with thresholds taken from")
    add("the synthetic ground truth, and the same statistics on the synthetic test-A set as the")
    add("reference of what passing looks like.")
    add("")
    add("## Verdict")
    add(f"- Weights: `{weights['path']}` (SHA-256 `{weights['sha256'][:16]}...`), "
        f"trained = **{weights['trained']}**, dataset: {weights['dataset']}.")
    if not weights["trained"]:
        add("- **These weights are untrained (random)**: the failures below show that the checks can fail;")
        add("  re-run the command at the bottom with the trained bundle to get the real verdict.")
    verdict = set_passes([r.checks for r in results])
    truth_rates = ""
    if reference is not None and reference.ground_truth:
        rates = [p / n for p, n in pass_rates([evaluate(s, thresholds) for s in reference.ground_truth]).values() if n]
        truth_rates = (f"; the synthetic ground truth passes each on {min(rates):.0%}-{max(rates):.0%} of "
                       "the test-A utterances")
    add(f"- **Verdict: {'PASS' if verdict else 'FAIL'}** (rule: each check passes on at least "
        f"{MIN_PASS_RATE:.0%} of the recordings it applies to{truth_rates}).")
    add(f"- Recordings passing every applicable check: {n_pass} of {applicable}.")
    add("")
    add("Pass rate of each check on the real recordings, next to the same model on the synthetic")
    add("test-A audio and the synthetic ground truth. A check that fails on real voices but passes on")
    add("synthetic ones is a generalisation gap; one that fails on both is a weakness of the model.")
    add("")
    add("| check | rule | real recordings | model on test-A | ground truth on test-A |")
    add("| --- | --- | --- | --- | --- |")
    real_rates = pass_rates([r.checks for r in results])
    has_reference = reference is not None and reference.ground_truth
    for name in CHECK_NAMES:
        passed_real, applicable_real = real_rates[name]
        real = f"{passed_real}/{applicable_real}" if applicable_real else "n/a"
        model = (_pass_rate(reference.model, thresholds, name)
                 if has_reference and reference.model else "not run")
        truth = _pass_rate(reference.ground_truth, thresholds, name) if has_reference else "not run"
        add(f"| {name} | {CHECK_RULES[name].format(**thresholds.to_dict())} | {real} | {model} | {truth} |")
    add("")
    add("## Recordings")
    add("| recording | speaker | transcript | seconds | source | licence | phone timings |")
    add("| --- | --- | --- | --- | --- | --- | --- |")
    for r in results:
        rec = r.recording
        add(f"| {rec.name} | {rec.speaker} | {rec.transcript or 'not published'} | {r.duration_s:.2f} | "
            f"{rec.source} | {rec.licence} | {rec.timing_source} |")
    add("")
    add("All are natural recordings of people (no synthesis). The CMU ARCTIC and amfm_decompy files")
    add("are copied into `tests/data/real_speech/` (see SOURCES.md there); the ALSA ones are read from")
    add("the Debian package alsa-utils (GPL-2), which `tools/setup_env.sh` installs. Note: flite's slt")
    add("voice, one of the four training voices, is built from the same speaker as arctic_a0009, so")
    add("that speaker's timbre is not entirely new to the model; the other speakers are.")
    add("")
    add("## How it is measured")
    add("- **Aperture**: the midline lip gap of the dataset (`synthetic_textalk4d.geometry.lip_gap`):")
    add(f"  z of upper-lip vertex {template_info['upper']} minus z of lower-lip vertex "
        f"{template_info['lower']} (the lower-lip vertex jawOpen moves most, the upper-lip vertex")
    add(f"  above it), in mm; {template_info['rest_mm']:.2f} mm at rest (neutral template), negative when the")
    add("  lips press past touching. Model output: `Pipeline.generate(audio, speaking_style=0,")
    add("  wrinkle_style=0, fps=30, seed=0)` (default styles, default DDIM steps).")
    add(f"- **VAD** on the loudness-normalised audio (`core.audio.load_audio`, speech at "
        f"{TARGET_SPEECH_DBFS:.0f} dBFS): a frame is speech")
    add(f"  when its 40 ms RMS level exceeds {SPEECH_THRESHOLD_DBFS:.0f} dBFS; silent gaps shorter than "
        f"{FILL_GAP_S * 1000:.0f} ms inside speech (stop")
    add(f"  closures) count as speech, speech islands shorter than {MIN_SPEECH_S * 1000:.0f} ms do not. "
        f"*Deep silence*: silent frames at least {SILENCE_MARGIN_S * 1000:.0f} ms")
    add("  from any speech frame (the synthetic ground truth is back at rest, in median, from there;")
    add("  nearer frames hold the anticipation and carry-over of the neighbouring words).")
    add(f"  *Loud* frames: speech frames within {LOUD_MARGIN_DB:.0f} dB of the speech level (vowel nuclei).")
    add("- **Statistics per clip**: deep-silence median aperture; 90th percentile of the aperture over")
    add("  speech frames; AUC of the aperture for loud vs deep-silence frames (0.5 = unrelated, 0 = the")
    add("  mouth opens in silence); per bilabial with known timing, the minimum aperture in")
    add(f"  [start - {BILABIAL_BEFORE_S * 1000:.0f} ms, end + {BILABIAL_AFTER_S * 1000:.0f} ms] "
        "(the mouth leads the sound). A statistic needs 2 frames of its kind,")
    add("  else the check is n/a for that clip. A recording passes when every applicable check passes.")
    add("")
    add("## Thresholds")
    add("Frozen in `tools/real_speech/checks.py` (so CI, which has no dataset, uses the same numbers) and")
    add("recomputed from the synthetic test-A ground truth on every run of the tool.")
    add("")
    add("| threshold | rule | frozen (used) | recomputed now |")
    add("| --- | --- | --- | --- |")
    frozen = thresholds.to_dict()
    again = recomputed.to_dict() if recomputed is not None else {}
    for key, rule in THRESHOLD_RULES.items():
        add(f"| {key} | {rule} | {frozen[key]:.2f} | {_fmt(again.get(key))} |")
    add("")
    if reference is not None and reference.ground_truth:
        add(f"## What passing looks like: synthetic test-A ({len(reference.utterances)} utterances)")
        add("Same statistics, ground truth vs the model on the same audio (default style, seed 0).")
        add("Percentiles over utterances (bilabial minima: over all bilabials).")
        add("")
        add("| statistic | ground truth p5 / median / p95 | model p5 / median / p95 |")
        add("| --- | --- | --- |")
        truth, model = summarise(reference.ground_truth), summarise(reference.model) if reference.model else {}
        for key in truth:
            def cell(summary):
                s = summary.get(key)
                if not s or s.get("n", 0) == 0:
                    return "n/a"
                return f"{s['p5']:.2f} / {s['median']:.2f} / {s['p95']:.2f} (n={s['n']})"
            add(f"| {key} | {cell(truth)} | {cell(model)} |")
        if reference.open_vowel_apertures_mm:
            gt = np.percentile(reference.open_vowel_apertures_mm, [10, 50])
            line = f"| aperture at open-vowel centres (p10 / median) | {gt[0]:.2f} / {gt[1]:.2f} |"
            if reference.model_open_vowel_apertures_mm:
                mo = np.percentile(reference.model_open_vowel_apertures_mm, [10, 50])
                line += f" {mo[0]:.2f} / {mo[1]:.2f} |"
            else:
                line += " n/a |"
            add(line)
        add("")
        add("| check | ground truth passes | model passes |")
        add("| --- | --- | --- |")
        for name in CHECK_NAMES:
            add(f"| {name} | {_pass_rate(reference.ground_truth, thresholds, name)} | "
                f"{_pass_rate(reference.model, thresholds, name) if reference.model else 'not run'} |")
        overall_gt = [clip_passes(evaluate(s, thresholds)) for s in reference.ground_truth]
        line = f"| all applicable | {sum(1 for v in overall_gt if v)}/{len(overall_gt)} |"
        if reference.model:
            overall = [clip_passes(evaluate(s, thresholds)) for s in reference.model]
            line += f" {sum(1 for v in overall if v)}/{len(overall)} |"
        else:
            line += " not run |"
        add(line)
        add("")
    add("## Results per recording")
    add("| recording | frames (speech / deep silence / loud) | silence median mm | speech p90 mm | AUC | "
        "bilabial minima mm | silence_closed | speech_open | speech_vs_silence | bilabial_closure | all |")
    add("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in results:
        s = r.statistics
        bil = ", ".join(f"{v:.2f}" for v in s.bilabial_minima_mm) or "n/a"
        add(f"| {r.recording.name} | {s.frames} ({s.speech_frames} / {s.silence_frames} / {s.loud_frames}) | "
            f"{_fmt(s.silence_aperture_mm)} | {_fmt(s.speech_aperture_p90_mm)} | "
            f"{_fmt(s.loud_vs_silence_auc)} | {bil} | "
            + " | ".join(_verdict(r.checks[name].passed) for name in CHECK_NAMES)
            + f" | {_verdict(r.passed)} |")
    add("")
    if alignment:
        add("## Bilabial timings")
        add("arctic_a0009 uses its published phone labels. arctic_a0007 has no labels: its transcript is")
        add("spoken by the flite voices " + ", ".join(alignment.get("voices", [])) + " (`-psdur` phone timings) and each")
        add("synthetic timeline is mapped onto the recording by DTW on per-utterance normalised MFCCs")
        add("(19 + deltas); the median over voices is used. The same procedure on arctic_a0009, against its")
        add("published labels:")
        err = alignment.get("validation", {})
        if err.get("comparable"):
            add(f"mean phone-centre error {err['mean_ms']:.0f} ms (max {err['max_ms']:.0f} ms), bilabials "
                + ", ".join(f"{e:.0f} ms" for e in err["bilabial_ms"]) + "; the bilabial window is "
                f"{(BILABIAL_BEFORE_S + BILABIAL_AFTER_S) * 1000:.0f} ms plus the phone.")
        else:
            add("not comparable (the phone sequences differ).")
        for name, phones in alignment.get("bilabials", {}).items():
            add(f"- {name}: " + ", ".join(f"/{p}/ {s:.3f}-{e:.3f} s" for p, s, e in phones))
        add("")
    if diagnostics:
        add("## Real vs synthetic audio, as the bundled encoder sees it")
        add("Natural-log mel power (`BundledAudioEncoder.log_mel`) after `load_audio`: speech level = mean")
        add("over speech frames and bands; tilt = mean of the top third of the bands minus the bottom third")
        add("(speech frames); floor = mean over non-speech frames. \"rank\" = share of synthetic test-A")
        add("utterances with a smaller value (0 or 100 %: outside everything the model was trained on).")
        add("")
        add("| clip | speech level | rank | tilt | rank | floor | rank |")
        add("| --- | --- | --- | --- | --- | --- | --- |")
        synth = diagnostics["synthetic"]
        add(f"| synthetic test-A (median of {synth['n']}) | {synth['speech_level']:.2f} | 50 % | "
            f"{synth['tilt']:.2f} | 50 % | {_fmt(synth['floor'])} | 50 % |")
        for row in diagnostics["recordings"]:
            add(f"| {row['name']} | {row['speech_level']:.2f} | {_fmt(row['speech_level_rank'], 0)} % | "
                f"{row['tilt']:.2f} | {_fmt(row['tilt_rank'], 0)} % | {_fmt(row['floor'])} | "
                f"{_fmt(row['floor_rank'], 0)} % |")
        add("")
    if equalised:
        add("## Experiment: inference-only spectral matching")
        add("Each recording's long-term average spectrum (speech frames) is moved to the mean of the")
        add("synthetic training voices' (every 10th train utterance) by a smoothed, zero-phase STFT gain")
        add("clipped to +-12 dB (`tools/real_speech/equalise.py`); the VAD still uses the original audio.")
        add("If this turns failures into passes, the gap is a channel/timbre mismatch that a spectral")
        add("normalisation (at inference, or per utterance in training) fixes.")
        add("")
        add("| recording | speech p90 mm (orig -> eq) | AUC (orig -> eq) | bilabial max mm (orig -> eq) | all (orig -> eq) |")
        add("| --- | --- | --- | --- | --- |")
        for before, after in zip(results, equalised):
            b, a = before.statistics, after.statistics
            worst = lambda s: max(s.bilabial_minima_mm) if s.bilabial_minima_mm else None  # noqa: E731
            add(f"| {before.recording.name} | {_fmt(b.speech_aperture_p90_mm)} -> {_fmt(a.speech_aperture_p90_mm)} | "
                f"{_fmt(b.loud_vs_silence_auc)} -> {_fmt(a.loud_vs_silence_auc)} | "
                f"{_fmt(worst(b))} -> {_fmt(worst(a))} | {_verdict(before.passed)} -> {_verdict(after.passed)} |")
        n_before = sum(1 for r in results if r.passed)
        n_after = sum(1 for r in equalised if r.passed)
        add("")
        add(f"Recordings passing: {n_before} without, {n_after} with the equaliser.")
        add("")
    if plot_path is not None:
        add("## Picture")
        add(f"![aperture vs envelope]({plot_path.name})")
        add("")
        add("Grey: audio level (dBFS, left axis); red: the model's mouth aperture (mm, right axis); blue:")
        add("VAD speech; green: bilabial windows; dashed: the silence (orange) and speech-open (blue)")
        add("thresholds.")
        add("")
    add("## Reproduce")
    add("```")
    add(command)
    add("```")
    add("Wall time: " + ", ".join(f"{k} {v:.1f} s" for k, v in timings.items()) + f". Machine: {machine}.")
    add("Tests: `.venv/bin/python -m pytest -q tests/test_real_speech.py` (the check on the bundled model")
    add("skips while the bundle's metadata says trained=false).")
    add("")
    add("## Limits")
    add("- Few recordings and few bilabials (3 with timings): enough to catch a model that ignores real")
    add("  voices, not a perceptual study. The thresholds are from synthetic ground truth, not from")
    add("  measured human lips.")
    add("- The aperture is one midline vertex pair: lip rounding, spreading and press are not checked.")
    add("- Energy VAD: breaths and loud noise count as speech, very soft speech as silence.")
    path = Path(path)
    path.write_text("\n".join(lines) + "\n")
    return path
