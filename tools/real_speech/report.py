"""docs/REAL_SPEECH.md, written from the results of tools/real_speech_check.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .checks import (
    BILABIAL_AFTER_S,
    BILABIAL_BEFORE_S,
    CHECK_NAMES,
    TARGET_NAMES,
    issue_targets,
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
from .sync import (
    BILABIAL_CLOSED_TARGET,
    ENVELOPE_FLOOR_DBFS,
    LAG_SEARCH_MS,
    LAG_TARGET_MS,
    MIN_LAG_SECONDS,
    MIN_PAUSE_S,
    REST_SHARE_TARGET,
    REST_WITHIN_MS,
)

LANGUAGE_NAMES = {"en": "English", "es": "Spanish", "fr": "French", "it": "Italian", "ru": "Russian",
                  "de": "German", "?": "unknown"}
BAND_ORDER = ("wideband", "telephone", "telephone-native")
TARGET_RULES = {
    "bilabials_closed": f"/p b m/ window minimum <= bilabial_max_mm on >= {BILABIAL_CLOSED_TARGET:.0%} of the bilabials",
    "rest_after_speech": f"at rest within {REST_WITHIN_MS:.0f} ms on >= {REST_SHARE_TARGET:.0%} of the speech ends",
    "lag": f"the group's pooled lag (clips' correlation curves averaged, weighted by length) within "
           f"+-{LAG_TARGET_MS:.0f} ms",
}


def group_results(results: list) -> dict[tuple[str, str], list]:
    """{(language, band): results}, languages in first-seen order, bands in BAND_ORDER."""
    groups: dict[tuple[str, str], list] = {}
    languages = list(dict.fromkeys(r.recording.language for r in results))
    for language in languages:
        for band in BAND_ORDER:
            members = [r for r in results if r.recording.language == language and r.recording.band == band]
            if members:
                groups[(language, band)] = members
    return groups


def _target_cell(target) -> str:
    if target.name == "lag":
        if target.value is None:
            return "n/a"
        return (f"{target.value:+.0f} ms {_verdict(target.passed)} "
                f"(clips within +-{target.target:.0f}: {target.passed_items}/{target.items})")
    if target.items == 0:
        return "n/a"
    return f"{target.passed_items}/{target.items} ({100 * target.share:.0f} %) {_verdict(target.passed)}"


def _lag_cell(members) -> str:
    lags = [r.statistics.lag_ms for r in members if r.statistics.lag_ms is not None]
    if not lags:
        return "n/a"
    return f"{np.median(lags):+.0f} [{min(lags):+.0f}, {max(lags):+.0f}]"


def _lag_stats(stats) -> str:
    lags = [s.lag_ms for s in stats if s.lag_ms is not None]
    if not lags:
        return "n/a"
    return f"{np.median(lags):+.0f} [{min(lags):+.0f}, {max(lags):+.0f}]"


def targets_table(results: list, thresholds: Thresholds) -> tuple[list[str], dict]:
    """Markdown rows of the issue #19 targets per language x band, per band and overall, and
    the numbers ({label: {target: TargetResult}})."""
    rows, numbers = [], {}

    def row(label, members):
        targets = issue_targets([r.statistics for r in members], thresholds)
        numbers[label] = targets
        four = sum(1 for r in members if r.passed)
        applicable = sum(1 for r in members if r.passed is not None)
        rows.append(f"| {label} | {len(members)} | " + " | ".join(_target_cell(targets[n]) for n in TARGET_NAMES)
                    + f" | {_lag_cell(members)} | {four}/{applicable} |")

    for (language, band), members in group_results(results).items():
        row(f"{LANGUAGE_NAMES.get(language, language)} ({language}), {band}", members)
    for band in BAND_ORDER:
        members = [r for r in results if r.recording.band == band]
        if members:
            row(f"**all {band}**", members)
    row("**all**", results)
    return rows, numbers

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
                 timings: dict, machine: str, template_info: dict, core_names: set | None = None,
                 missing: list | None = None, missing_hint: str = "", dataset_info: dict | None = None) -> Path:
    lines: list[str] = []
    add = lines.append
    passed = [r.passed for r in results]
    n_pass = sum(1 for p in passed if p)
    applicable = sum(1 for p in passed if p is not None)
    add("# Real human speech: do the lips follow real voices?")
    add("")
    add("*Written by `tools/real_speech_check.py`; do not edit by hand.*")
    add("")
    add("The bundled model is trained on synthetic voices (docs/DATASET.md). This page runs it on")
    add("real human recordings that install offline, in several languages, wideband and 8 kHz telephone")
    add("band, and checks that the mouth is closed in silence, opens on speech and closes on /p b m/ where")
    add("the timing is known (forced alignment), with thresholds taken from the synthetic ground truth;")
    add("it also measures the audio-to-motion lag and how fast the mouth is back at rest after speech, and")
    add("reports the issue #19 targets per language and band.")
    add("")
    add("## Verdict")
    add(f"- Weights: `{weights['path']}` (SHA-256 `{weights['sha256'][:16]}...`), "
        f"trained = **{weights['trained']}**, dataset: {weights['dataset']}.")
    if "lip_seal_mm" in weights:
        seal = weights["lip_seal_mm"]
        add(f"- Lip seal (core/lip_seal.py): {seal:g} mm"
            + (", scaled per frame by the weights' closure detector (core/closure.py)" if weights.get("closure_detector")
               else ", every frame alike (the weights have no closure detector)" if seal else " (off)") + ".")
    if not weights["trained"]:
        add("- **These weights are untrained (random)**: the failures below show that the checks can fail;")
        add("  re-run the command at the bottom with the trained bundle to get the real verdict.")
    core = [r for r in results if core_names is None or r.recording.name in core_names]
    verdict = set_passes([r.checks for r in core])
    truth_rates = ""
    if reference is not None and reference.ground_truth:
        rates = [p / n for p, n in pass_rates([evaluate(s, thresholds) for s in reference.ground_truth]).values() if n]
        truth_rates = (f"; the synthetic ground truth passes each on {min(rates):.0%}-{max(rates):.0%} of "
                       "the test-A utterances")
    add(f"- **Verdict on the original set ({len(core)} clips, the four checks): {'PASS' if verdict else 'FAIL'}** "
        f"(rule: each check passes on at least {MIN_PASS_RATE:.0%} of the recordings it applies to{truth_rates}).")
    if len(core) != len(results):
        verdict_all = set_passes([r.checks for r in results])
        add(f"- The same rule over all {len(results)} clips (every language and band): "
            f"**{'PASS' if verdict_all else 'FAIL'}**; recordings passing every applicable check: {n_pass} of {applicable}.")
        _, numbers = targets_table(results, thresholds)
        overall = numbers["**all**"]
        add("- Issue #19 targets over all clips: " + "; ".join(
            f"{name} {_target_cell(overall[name])}" for name in TARGET_NAMES)
            + " (per language and band: next section).")
    else:
        add(f"- Recordings passing every applicable check: {n_pass} of {applicable}.")
    add("")
    add("Pass rate of each check on the real recordings (the original set, all clips, wideband and")
    add("telephone), next to the same model on the synthetic test-A audio and the synthetic ground")
    add("truth. A check that fails on real voices but passes on synthetic ones is a generalisation gap;")
    add("one that fails on both is a weakness of the model.")
    add("")
    subsets = [("original set", core), ("all clips", results)]
    subsets += [(band, [r for r in results if r.recording.band == band]) for band in BAND_ORDER]
    subsets = [(label, members) for label, members in subsets if members]
    add("| check | rule | " + " | ".join(label for label, _ in subsets) + " | model on test-A | ground truth on test-A |")
    add("| --- | --- | " + " | ".join("---" for _ in subsets) + " | --- | --- |")
    has_reference = reference is not None and reference.ground_truth
    subset_rates = [pass_rates([r.checks for r in members]) for _, members in subsets]
    for name in CHECK_NAMES:
        cells = []
        for rates in subset_rates:
            passed_real, applicable_real = rates[name]
            cells.append(f"{passed_real}/{applicable_real}" if applicable_real else "n/a")
        model = (_pass_rate(reference.model, thresholds, name)
                 if has_reference and reference.model else "not run")
        truth = _pass_rate(reference.ground_truth, thresholds, name) if has_reference else "not run"
        add(f"| {name} | {CHECK_RULES[name].format(**thresholds.to_dict())} | " + " | ".join(cells)
            + f" | {model} | {truth} |")
    add("")
    add("## Issue #19 targets per language and band")
    add("Targets (issue #19): " + "; ".join(f"**{n}**: {TARGET_RULES[n]}" for n in TARGET_NAMES) + ".")
    add(f"bilabial_max_mm = {thresholds.bilabial_max_mm:.2f} mm (the bilabial_closure threshold); \"at rest\" = "
        f"aperture <= silence_max_mm = {thresholds.silence_max_mm:.2f} mm.")
    add("Cells: items passing / items (share) and the verdict; bilabials and speech ends are pooled over the")
    add("group's clips. lag: the pooled lag and its verdict, and how many clips' own lag is within +-40 ms;")
    add("\"clip lags ms\" = median [min, max] of the clips' own lags (positive: the mouth moves after the sound;")
    add("+-200 = the edge of the search). \"four checks\" = clips passing every applicable check above.")
    truth_lags = [s.lag_ms for s in reference.ground_truth if s.lag_ms is not None] if has_reference else []
    if truth_lags:
        q1, q3 = np.percentile(truth_lags, [25, 75])
        add("One clip's lag is noisy: the synthetic ground truth, in sync by construction, has per-utterance lags")
        add(f"from {q1:+.0f} to {q3:+.0f} ms (interquartile range, {len(truth_lags)} utterances), hence the pooled lag "
            "for the target.")
    else:
        add("One clip's lag is noisy (even on synthetic ground truth that is in sync by construction), hence the")
        add("pooled lag for the target.")
    add("")
    rows, _ = targets_table(results, thresholds)
    add("| group | clips | " + " | ".join(TARGET_NAMES) + " | clip lags ms | four checks |")
    add("| --- | --- | " + " | ".join("---" for _ in TARGET_NAMES) + " | --- | --- |")
    for line in rows:
        add(line)
    if has_reference:
        truth_targets = issue_targets(reference.ground_truth, thresholds)
        line = "| synthetic test-A ground truth | " + str(len(reference.ground_truth)) + " | " + " | ".join(
            _target_cell(truth_targets[n]) for n in TARGET_NAMES) + " | " + _lag_stats(reference.ground_truth) + " | |"
        add(line)
        if reference.model:
            model_targets = issue_targets(reference.model, thresholds)
            add("| model on synthetic test-A | " + str(len(reference.model)) + " | " + " | ".join(
                _target_cell(model_targets[n]) for n in TARGET_NAMES) + " | " + _lag_stats(reference.model) + " | |")
        if reference.model_phone:
            phone_targets = issue_targets(reference.model_phone, thresholds)
            add("| model on synthetic test-A over a phone line (the dataset's telephone codecs) | "
                + str(len(reference.model_phone)) + " | " + " | ".join(
                    _target_cell(phone_targets[n]) for n in TARGET_NAMES) + " | " + _lag_stats(reference.model_phone) + " | |")
    add("")
    add("A group with few bilabials (single syllables, short prompts) or few speech ends decides on few items:")
    add("read the counts, not only the verdict.")
    add("")
    add("## Recordings")
    wide = [r for r in results if r.recording.band != "telephone"]
    made = [r for r in results if r.recording.band == "telephone"]
    languages = sorted({r.recording.language for r in results} - {"?"})
    add(f"{len(results)} clips: {len(wide)} recordings ({sum(r.duration_s for r in wide):.0f} s; languages "
        + ", ".join(f"{LANGUAGE_NAMES.get(x, x)} {sum(1 for r in wide if r.recording.language == x)}" for x in languages)
        + f") and {len(made)} telephone versions made from the wideband ones.")
    if missing:
        add("")
        add("**Missing on this machine** (their recordings are left out): " + ", ".join(missing)
            + f". Install with `{missing_hint}`.")
    add("")
    add("| recording | language | band | speaker | transcript | seconds | source | licence | phone timings |")
    add("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in wide:
        rec = r.recording
        add(f"| {rec.name} | {rec.language} | {rec.band} | {rec.speaker} | {rec.transcript or 'not published'} | "
            f"{r.duration_s:.2f} | {rec.source} | {rec.licence} | {rec.timing_source} |")
    add("")
    if made:
        codecs = {c: sum(1 for r in made if r.recording.codec == c) for c in sorted({r.recording.codec for r in made})}
        add("Telephone versions (`<name>_tel`, band `telephone`): every wideband recording through sox, "
            "300-3400 Hz (linear-phase sinc), 8 kHz, a narrowband codec, back to 16 kHz "
            "(`tools/real_speech/telephone.py`); codecs alternate: "
            + ", ".join(f"{c} {n}" for c, n in codecs.items()) + ". They keep the wideband clip's phone timings.")
        add("")
    add("All are natural recordings of people (no synthesis). The CMU ARCTIC and amfm_decompy files")
    add("are copied into `tests/data/real_speech/` (see SOURCES.md there); the others are read from")
    add("Debian packages that `tools/setup_env.sh` installs (alsa-utils; the Asterisk prompt packages,")
    add("pocketsphinx-testdata and klettres-data of `tools/real_speech/sources.py`), decoded to 16 kHz WAV")
    add("in `build/real_speech/` (G.722 with the PyPI package G722, the rest with sox). Note: flite's slt")
    add("voice, one of the training voices, is built from the same speaker as arctic_a0009, so")
    add("that speaker's timbre is not entirely new to the model; the other speakers are.")
    add("")
    add("## How it is measured")
    add("- **Aperture**: the midline lip gap of the dataset (`synthetic_textalk4d.geometry.lip_gap`):")
    add(f"  z of upper-lip vertex {template_info['upper']} minus z of lower-lip vertex "
        f"{template_info['lower']} (the lower-lip vertex jawOpen moves most, the upper-lip vertex")
    add(f"  above it), in mm; {template_info['rest_mm']:.2f} mm at rest (neutral template), negative when the")
    add("  lips press past touching. Model output: `Pipeline.generate(audio, speaking_style=0,")
    add("  fps=30, seed=0)` (the default styles: speaking style 0, the most lined wrinkle style; default")
    add("  DDIM steps).")
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
    add("- **Audio-to-motion lag** (`tools/real_speech/sync.py`): the aperture (interpolated to 100 Hz) is")
    add(f"  correlated (Pearson) with the speech envelope (40 ms RMS level in dBFS at 100 Hz, floored at "
        f"{ENVELOPE_FLOOR_DBFS:.0f} dBFS)")
    add(f"  at every offset in +-{LAG_SEARCH_MS:.0f} ms (10 ms steps, parabolic refinement); the lag is the best offset,")
    add(f"  positive when the mouth moves after the sound. Clips shorter than {MIN_LAG_SECONDS:.1f} s: n/a.")
    add(f"- **Rest after speech**: the VAD at 100 Hz; for every end of speech followed by at least "
        f"{MIN_PAUSE_S * 1000:.0f} ms of silence")
    add("  (the clip's end counts), the time until the aperture first falls to silence_max_mm (the pause")
    add("  length when it never does).")
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
        if dataset_info:
            add(f"Dataset: `{dataset_info['path']}` (meta.json SHA-256 `{dataset_info['meta_sha256'][:12]}`); the "
                "weights were trained on the dataset named in the verdict above, which may be another build.")
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
    add("Closed: bilabials whose window minimum is <= bilabial_max_mm. Rest: ms from each end of speech")
    add("(followed by a pause) until the mouth is at rest. Lag: best-correlating offset (ms, + = mouth late)")
    add("and its correlation r.")
    add("")
    add("| recording | lang | band | frames (speech / deep silence / loud) | silence median mm | speech p90 mm | AUC | "
        "bilabial minima mm | closed | rest ms | lag ms (r) | silence_closed | speech_open | speech_vs_silence | "
        "bilabial_closure | all |")
    add("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in results:
        s = r.statistics
        bil = ", ".join(f"{v:.2f}" for v in s.bilabial_minima_mm) or "n/a"
        closed = (f"{sum(v <= thresholds.bilabial_max_mm for v in s.bilabial_minima_mm)}/{len(s.bilabial_minima_mm)}"
                  if s.bilabial_minima_mm else "n/a")
        rest = ", ".join(f"{v:.0f}" for v in s.rest_release_ms) or "n/a"
        lag = "n/a" if s.lag_ms is None else f"{s.lag_ms:+.0f} ({s.lag_correlation:.2f})"
        band = r.recording.band + (f" {r.recording.codec}" if r.recording.codec else "")
        add(f"| {r.recording.name} | {r.recording.language} | {band} | "
            f"{s.frames} ({s.speech_frames} / {s.silence_frames} / {s.loud_frames}) | "
            f"{_fmt(s.silence_aperture_mm)} | {_fmt(s.speech_aperture_p90_mm)} | "
            f"{_fmt(s.loud_vs_silence_auc)} | {bil} | {closed} | {rest} | {lag} | "
            + " | ".join(_verdict(r.checks[name].passed) for name in CHECK_NAMES)
            + f" | {_verdict(r.passed)} |")
    add("")
    if alignment:
        add("## Bilabial timings")
        add("Where a transcript exists, the phone timings come from (per recording, see the Recordings table):")
        add("- English: **PocketSphinx forced alignment** (PyPI `pocketsphinx`, its US English acoustic model and")
        add("  dictionary; `tools/real_speech/alignment.py`), 10 ms steps. A transcript with a word outside its")
        add("  dictionary falls back to flite + DTW: the transcript spoken by the flite voices "
            + ", ".join(alignment.get("voices", [])) + ",")
        add("  each synthetic timeline mapped onto the recording by DTW on normalised MFCCs, the median used.")
        add("- Other languages: **espeak-ng phones + PocketSphinx**: espeak-ng's phone sequence of the transcript")
        add("  (phoneme events from its C library, mapped to the shared phone set, so Spanish /p/ is `p`) is")
        add("  force-aligned by PocketSphinx's English acoustic model (each phone mapped to the nearest English")
        add("  one). Where that fails: espeak-ng phoneme timings + DTW (three variants of the language's voice,")
        add("  each mapped by the same DTW, the median used).")
        add("- arctic_a0009 keeps its published phone labels; telephone versions keep their wideband clip's timings.")
        add("")
        add("Each aligner on arctic_a0009 against its published labels (centre-time error):")
        add("")
        add("| aligner | mean phone error | max | bilabial /p/, /b/ errors |")
        add("| --- | --- | --- | --- |")
        for label, err in alignment.get("validation_all", {}).items():
            if err is None:
                add(f"| {label} | not run (missing) | | |")
                continue
            matched = err.get("matched") or {}
            if err.get("comparable"):
                mean, peak = f"{err['mean_ms']:.0f} ms", f"{err['max_ms']:.0f} ms"
            elif matched.get("matched"):
                mean = (f"{matched['mean_ms']:.0f} ms over the {matched['matched']} of {matched['of']} phones "
                        "that match the labels' sequence")
                peak = f"{matched['max_ms']:.0f} ms"
            else:
                mean, peak = "n/a (other phone sequence)", ""
            bil = ", ".join(f"{e:.0f} ms" for e in err["bilabial_ms"]) if err.get("bilabial_ms") is not None else "n/a"
            add(f"| {label} | {mean} | {peak} | {bil} |")
        add("")
        add(f"The bilabial window is {(BILABIAL_BEFORE_S + BILABIAL_AFTER_S) * 1000:.0f} ms plus the phone, so an "
            "error of a few tens of ms still puts the closure inside it.")
        add("")
    if diagnostics:
        add("## Real vs synthetic audio, as the bundled encoder sees it (original set)")
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
        add("## Experiment: inference-only spectral matching (original set)")
        add("Each recording's long-term average spectrum (speech frames) is moved to the mean of the")
        add("synthetic training voices' (every 10th train utterance) by a smoothed, zero-phase STFT gain")
        add("clipped to +-12 dB (`tools/real_speech/equalise.py`); the VAD still uses the original audio.")
        add("If this turns failures into passes, the gap is a channel/timbre mismatch that a spectral")
        add("normalisation (at inference, or per utterance in training) fixes.")
        add("")
        add("| recording | speech p90 mm (orig -> eq) | AUC (orig -> eq) | bilabial max mm (orig -> eq) | all (orig -> eq) |")
        add("| --- | --- | --- | --- | --- |")
        for before, after in zip(core, equalised):
            b, a = before.statistics, after.statistics
            worst = lambda s: max(s.bilabial_minima_mm) if s.bilabial_minima_mm else None  # noqa: E731
            add(f"| {before.recording.name} | {_fmt(b.speech_aperture_p90_mm)} -> {_fmt(a.speech_aperture_p90_mm)} | "
                f"{_fmt(b.loud_vs_silence_auc)} -> {_fmt(a.loud_vs_silence_auc)} | "
                f"{_fmt(worst(b))} -> {_fmt(worst(a))} | {_verdict(before.passed)} -> {_verdict(after.passed)} |")
        n_before = sum(1 for r in core if r.passed)
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
    add("- Few speakers per language (one to three), short prompts and syllables, no conversational")
    add("  speech, no Chinese (no Mandarin recording that installs offline was found): enough to show")
    add("  per-language and per-band gaps, not a perceptual study. The thresholds are from synthetic")
    add("  ground truth, not from measured human lips.")
    add("- Bilabial timings outside English come from an English acoustic model aligning espeak-ng's phones")
    add("  (validated only on the labelled English clip above); a misplaced window can count a closed")
    add("  mouth as open or the reverse.")
    add("- The telephone versions are simulated (sox filter + codec), not real phone calls; the")
    add("  telephone-native Asterisk prompts have no published transcript, so they count for the lag and")
    add("  rest targets only.")
    add("- The aperture is one midline vertex pair: lip rounding, spreading and press are not checked.")
    add("- Energy VAD: breaths and loud noise count as speech, very soft speech as silence.")
    path = Path(path)
    path.write_text("\n".join(lines) + "\n")
    return path
