"""Runs the robustness tests (tests/test_robustness_*.py) and writes docs/ROBUSTNESS.md.

    .venv/bin/python tools/robustness_report.py                 # fast tests (~1 min on 2 cores)
    .venv/bin/python tools/robustness_report.py --slow          # also the 10-minute audio run
    .venv/bin/python tools/robustness_report.py --long-json out.json   # add a measured long run
                                                                # (tools/measure_long_audio.py;
                                                                # without it the report's last one is kept)

pytest writes a JUnit XML report; each case of issues #8 and #17 below names the tests that prove it, and
its "Observed" column is what those tests did (pass / FAIL with the message / skip with the
reason / not run). Tests not named by any case are listed too, so nothing goes unreported. Exits
non-zero when a test failed or a case has no test.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
OUTPUT = REPO_ROOT / "docs" / "ROBUSTNESS.md"
TEST_GLOB = "tests/test_robustness_*.py"


@dataclass(frozen=True)
class Case:
    section: str
    case: str
    expected: str
    tests: tuple[str, ...]  # "module::test_name" (every parametrisation of it counts)


A, T, L, F, S = "audio", "targets", "long", "faults", "safety"
# Round 2 (issue #17): sections whose tests live in test_robustness_<module>.py.
FR, BA, CO, AR = "frames", "batch", "conditioning", "arguments"
SECTIONS = {
    A: "1. Bad audio",
    T: "2. Bad targets",
    L: "3. Long and heavy input",
    F: "4. Faults",
    S: "5. Weights and inputs as an attack surface",
    FR: "6. What artists do to their meshes and files (issue #17)",
    BA: "7. Batch runs on a farm (issue #17)",
    CO: "8. Audio that decodes but is not clean speech (issue #17)",
    AR: "9. One rule per argument, messages that say what is wrong (issue #17)",
}


def _t(module: str, *names: str) -> tuple[str, ...]:
    return tuple(f"test_robustness_{module}::{name}" for name in names)


CASES = [
    Case(A, "Not an audio file (text or image renamed .wav/.mp3)",
         "AudioError naming the file: not audio, truncated or corrupt; scene unchanged, no files",
         _t(A, "test_not_an_audio_file_is_refused_with_a_clear_message", "test_bad_audio_file_leaves_the_scene_unchanged")),
    Case(A, "Truncated WAV / FLAC / MP3 (half the bytes)", "The decodable part is used (about half the duration, normal level)",
         _t(A, "test_truncated_file_gives_the_part_that_is_there")),
    Case(A, "File cut inside its header (WAV, FLAC, MP3, OGG)", "AudioError: truncated or corrupt; scene unchanged",
         _t(A, "test_file_cut_inside_its_header_is_refused", "test_truncated_ogg_without_a_complete_page_is_refused_not_nan",
            "test_bad_audio_file_leaves_the_scene_unchanged")),
    Case(A, "Corrupt bytes in the middle (WAV, FLAC, MP3)", "Finite audio of about the right length, or a clear AudioError",
         _t(A, "test_overwritten_bytes_in_the_middle_decode_to_finite_audio")),
    Case(A, "Zero-length file, header without samples", "AudioError: empty / no audio samples; scene unchanged",
         _t(A, "test_zero_length_file_and_header_only_file", "test_bad_audio_file_leaves_the_scene_unchanged")),
    Case(A, "Pure silence (and hiss below the noise floor)", "Kept silent (not amplified); generation gives a still, finite face",
         _t(A, "test_pure_silence_is_kept_silent_not_amplified", "test_silent_six_channel_96k_file_with_non_ascii_path_generates")),
    Case(A, "Clipping (hard-clipped, float WAV beyond +-1)", "Normalised to speech level, peaks below full scale",
         _t(A, "test_clipped_audio_is_limited_below_full_scale")),
    Case(A, "8 kHz and 96 kHz", "Resampled to 16 kHz with the same duration and pitch",
         _t(A, "test_low_and_high_sample_rates_keep_duration_and_pitch", "test_silent_six_channel_96k_file_with_non_ascii_path_generates")),
    Case(A, "Stereo and 6 channels", "Mixed to mono (also when shorter than the channel count)",
         _t(A, "test_stereo_and_six_channel_files_are_mixed_to_mono", "test_six_channel_file_shorter_than_its_channel_count",
            "test_silent_six_channel_96k_file_with_non_ascii_path_generates")),
    Case(A, "Path with spaces and non-ASCII characters (WAV, FLAC, OGG, MP3)", "Loads and generates normally",
         _t(A, "test_path_with_spaces_and_non_ascii_characters", "test_silent_six_channel_96k_file_with_non_ascii_path_generates")),
    Case(A, "Missing file (and a folder instead of a file)", "'not found' naming the path; scene unchanged",
         _t(A, "test_missing_file_and_folder", "test_bad_audio_file_leaves_the_scene_unchanged")),
    Case(A, "Sound strip whose file was moved", "'The sound of strip ... is missing' from the API and the operator; scene unchanged",
         _t(A, "test_moved_sound_strip_file_leaves_the_scene_unchanged")),
    Case(A, "Property-based: random lengths, rates, channels, amplitudes (arrays and WAV files)",
         "Mono float32 16 kHz, right length, finite, peak <= 0.99, silence stays silent",
         _t(A, "test_loader_property_any_length_rate_channels_amplitude", "test_loader_property_on_real_wav_files")),
    Case(A, "Property-based: audio features for random lengths, amplitudes, frame counts",
         "Finite (T, C) features with exactly the requested T",
         _t(A, "test_features_property_finite_with_the_requested_frame_count")),
    Case(T, "No object", "MeshError 'No target object'; panel says 'Select a mesh'", _t(T, "test_no_target_object")),
    Case(T, "Non-mesh (empty, camera, curve, armature)", "MeshError 'is not a mesh'; panel says so", _t(T, "test_non_mesh_target")),
    Case(T, "Mesh without UVs", "MeshError 'has no UV map'; panel says so", _t(T, "test_mesh_without_uvs")),
    Case(T, "Mesh with a different UV layout", "MeshError: UV layout does not match the MakeHuman template",
         _t(T, "test_mesh_with_another_uv_layout")),
    Case(T, "Mesh in Edit Mode", "MeshError: switch to Object Mode", _t(T, "test_mesh_in_edit_mode")),
    Case(T, "Mesh with modifiers", "Animated below the modifiers (subdivided result moves); modifiers kept; removal restores",
         _t(T, "test_mesh_with_modifiers_is_animated_and_keeps_its_modifiers")),
    Case(T, "Existing shape keys and animation", "User keys, their action and object animation survive generation and removal",
         _t(T, "test_users_shape_keys_and_animation_survive_generation_and_removal")),
    Case(T, "Linked library data / library override", "MeshError: linked from the library, make it local; made-local copy works",
         _t(T, "test_linked_library_object_is_refused", "test_library_override_with_linked_mesh_is_refused",
            "test_made_local_library_object_generates")),
    Case(T, "Target deleted or edited during generation", "MeshError at apply; scene unchanged, no files",
         _t(T, "test_target_deleted_or_changed_during_generation")),
    Case(L, "10-minute file", "Pre-check estimates a bounded few GB; the streamed run (Blender, 18,000 shape keys and EXR files) "
         "completes with peak memory under 4 GB and within the estimate",
         _t(L, "test_ten_minutes_at_30_fps_needs_a_bounded_few_gigabytes", "test_estimate_bounds_the_arrays_of_a_real_run",
            "test_ten_minute_file_completes_within_the_memory_estimate")),
    Case(L, "1-hour file", "Refused from the header in about a second (nothing decoded) with the memory and disk it would need",
         _t(L, "test_one_hour_file_is_refused_by_the_pipeline_without_decoding",
            "test_one_hour_file_is_refused_before_any_work_with_the_disk_it_would_need")
         + _t(A, "test_too_long_file_is_refused_from_its_header_before_decoding")),
    Case(L, "Not enough memory / disk space (checked before writing)", "ResourceError before any work",
         _t(L, "test_memory_check_refuses_what_does_not_fit", "test_disk_check_uses_the_nearest_existing_folder",
            "test_clip_too_big_for_free_memory_is_refused_before_any_work")
         + _t(F, "test_too_little_disk_space_is_refused_before_any_work", "test_disk_filled_during_compute_is_caught_before_writing")),
    Case(F, "CUDA asked for but absent", "DeviceError 'CUDA was requested but no CUDA GPU is usable'; 'auto' uses the CPU",
         _t(F, "test_cuda_requested_without_cuda")),
    Case(F, "CUDA out of memory (injected)", "Same run retried on the CPU, the summary says so; other errors are not retried",
         _t(F, "test_injected_cuda_out_of_memory_falls_back_to_the_cpu", "test_other_gpu_errors_and_cpu_out_of_memory_are_not_retried")),
    Case(F, "Cancel at every stage (audio, features, diffusion, decode, resample, writing)",
         "Cancelled; scene unchanged; partial EXR files deleted",
         _t(F, "test_cancel_at_every_stage_leaves_scene_and_disk_unchanged", "test_cancel_while_writing_removes_partial_output")),
    Case(F, "File reloaded mid-run", "Job cancelled, state reset, nothing applied to the new file",
         _t(F, "test_file_reloaded_mid_run_cancels_the_job_and_changes_nothing")),
    Case(F, "Blender closed mid-run", "Worker cancelled at exit, process ends promptly with status 0, no files",
         _t(F, "test_blender_quitting_mid_run_stops_the_worker_and_writes_nothing")),
    Case(F, "Second Generate while one runs", "Operator disabled: 'A generation is running'; API runs are serialised",
         _t(F, "test_second_generate_while_one_runs_is_refused", "test_concurrent_api_runs_are_serialised_and_equal_to_sequential_runs")),
    Case(F, "Read-only output folder", "ResourceError 'Cannot write the wrinkle maps' before the model runs",
         _t(F, "test_read_only_output_folder_is_refused_before_any_work")),
    Case(F, "Disk full while writing EXRs (real ENOSPC: small tmpfs, /dev/full)",
         "ResourceError naming the folder and free space; written files deleted; scene unchanged",
         _t(F, "test_disk_full_while_writing_exrs")),
    Case(S, "Weights: safetensors + SHA-256 only", "Shipped file matches its manifest; unlisted or unmanifested files refused",
         _t(S, "test_shipped_weights_match_the_shipped_manifest", "test_weights_without_manifest_entry_are_refused")),
    Case(S, "Tampered or truncated weights", "WeightsError (SHA-256 mismatch, or invalid safetensors if the manifest was forged too)",
         _t(S, "test_tampered_weights_are_refused", "test_truncated_weights_are_refused_even_with_a_matching_manifest",
            "test_malformed_safetensors_headers_are_refused", "test_generate_with_tampered_weights_changes_nothing")),
    Case(S, "Pickles (torch.save, pickle, HuBERT pytorch_model.bin)", "Refused without unpickling: the payload never runs",
         _t(S, "test_pickle_disguised_as_safetensors_never_runs", "test_hubert_folder_with_a_pickled_checkpoint_is_refused_without_unpickling",
            "test_the_add_on_code_never_unpickles_evaluates_or_uses_the_network")),
    Case(S, "No network access", "A whole generation (weights loading included) with sockets disabled succeeds, 0 attempts",
         _t(S, "test_a_whole_generation_opens_no_socket", "test_the_add_on_code_never_unpickles_evaluates_or_uses_the_network")),
    Case(S, "Paths only under the output folder", "Hostile object / sound names cannot escape; forged records delete no other files",
         _t(S, "test_object_names_cannot_move_output_out_of_the_output_folder",
            "test_packed_sound_with_hostile_name_is_unpacked_inside_the_temp_folder",
            "test_remove_output_deletes_only_wrinkle_files_of_a_forged_record")),
    Case(FR, "Template head with rotation, non-uniform scale or mirroring applied (Object > Apply), the head alone "
         "or with its mouth parts, shape-key and ARKit modes",
         "Every vertex moves by the applied matrix times the untransformed head's motion (world space, within 1 %); "
         "used to move in the untransformed template's frame",
         _t(FR, "test_applied_rotation_scale_and_mirroring_keep_the_motion_in_the_meshs_frame",
            "test_template_frame_is_recovered_for_rotation_non_uniform_scale_and_mirroring")),
    Case(FR, "Head squashed flat (a scale of 0 applied)", "MeshError 'squashed flat'; scene unchanged",
         _t(FR, "test_head_squashed_flat_is_refused_with_a_clear_message")),
    Case(FR, "Render UV map is another layout (a lightmap), the template's is a second UV map",
         "Driven through the UV map with the template layout, material reads it, the user's render choice kept; "
         "a mesh with no template UV map is still refused",
         _t(FR, "test_render_uv_map_of_another_layout_falls_back_to_the_template_uv_map",
            "test_only_a_foreign_uv_layout_is_still_refused")),
    Case(FR, "Unsaved file with //relative audio, strip sound or output folder",
         "TexTalkerError: relative to the .blend, which is not saved yet (was 'Audio file not found: speech.wav')",
         _t(FR, "test_relative_paths_in_an_unsaved_file_say_what_to_do")),
    Case(FR, "Target renamed while the model runs (the modal operator keeps the UI live)",
         "The renamed object gets the animation (found by its session id; it used to count as deleted and the run "
         "was thrown away); a real deletion is still refused", _t(FR, "test_target_renamed_while_the_model_runs_still_gets_the_animation")),
    Case(FR, "Panel with a //relative audio file in an unsaved file", "Generate disabled: 'Save the .blend first: the "
         "audio path is relative to it' (was 'Audio file not found')",
         _t(FR, "test_panel_says_to_save_first_for_a_relative_audio_path")),
    Case(FR, "Relative output folder (batch job's working directory)",
         "Made absolute: the .blend finds its maps from any other directory",
         _t(FR, "test_relative_output_folder_is_made_absolute")),
    Case(FR, "Undo (Ctrl+Z) after Generate, then Generate again",
         "The undone run's EXR folder (nothing uses it; the redo history is gone) is deleted by the next successful "
         "run; a folder a saved .blend used is kept", _t(FR,
         "test_folder_of_an_undone_run_is_deleted_by_the_next_generation_unless_a_saved_file_uses_it")),
    Case(FR, "Linked duplicate (Alt+D, shared mesh) of a head that has output",
         "MeshError 'shares its mesh with ...' (a run used to wipe the other object's keys and pile a second "
         "wrinkle setup on the shared material); scene unchanged; works once the other output is removed",
         _t(FR, "test_linked_duplicate_of_an_animated_head_is_refused_until_its_output_is_removed")),
    Case(BA, "Two batch runs on one .blend at once (real processes; and against a held lock)",
         "Exclusive lock beside the file: the second refuses at once in one line, exit 1; the .blend opens and "
         "references every EXR folder on disk; no lock file left",
         _t(BA, "test_second_run_on_a_locked_blend_refuses_at_once",
            "test_two_concurrent_batch_runs_on_one_blend_never_lose_it")),
    Case(BA, "Run inside Blender on a .blend another run saved after this Blender opened it",
         "Re-read under the lock: the other run's changes and this run's output are both in the saved file (the "
         "stale copy used to be saved over them)",
         _t(BA, "test_run_inside_blender_rereads_a_file_saved_since_it_was_opened")),
    Case(BA, "SIGTERM / SIGINT while the EXR files are written (and SIGTERM while the model runs)",
         "One line ('terminated (SIGTERM)' / 'interrupted'), exit 143 / 130; written files deleted; .blend untouched",
         _t(BA, "test_signal_while_writing_exrs_removes_the_partial_sequence_with_one_line",
            "test_sigterm_while_the_model_runs_is_one_line_and_leaves_nothing")),
    Case(BA, "Run killed with SIGKILL while writing (no handler runs)",
         "Its hidden .partial folder (a 0-byte EXR included) is swept by the next run on the object; a live run's is kept",
         _t(BA, "test_staging_folder_of_a_killed_run_is_swept_by_the_next_run")),
    Case(BA, "Hostile staging folders: a user's '.x.partial' folder with other files, a '.y.partial' symlink",
         "The sweep deletes sequence files only and never follows links",
         _t(BA, "test_sweep_deletes_only_sequence_files_and_never_follows_links")),
    Case(BA, "Bad arguments: --steps 0 / 2.5 / 501, --seed 1.5, --blink-rate -1, unknown styles, missing audio, "
         "--save / --output-folder / --arkit-export read-only or wrong suffix, --save with --no-save",
         "One line 'TexTalker: ...', exit 1, before the model runs; .blend untouched, no files",
         _t(BA, "test_bad_arguments_are_one_line_before_the_model_runs")),
    Case(BA, "ARKit export on a full disk", "Refused before the model runs (was found after the whole generation)",
         _t(BA, "test_full_disk_for_the_arkit_export_is_refused_before_the_model_runs")),
    Case(BA, "Save fails after a successful generation (disk filled, Blender cannot write x.blend@)",
         "One line, exit 1; the new output removed from the scene and its EXR files deleted (nothing orphaned); "
         ".blend on disk unchanged",
         _t(BA, "test_save_failing_after_generation_removes_the_output_and_keeps_the_blend")),
    Case(BA, "Corrupt or truncated .blend given to --blend", "One line naming the file, exit 1 (was a RuntimeError "
         "traceback); the file untouched", _t(BA, "test_corrupt_blend_is_one_line_not_a_traceback")),
    Case(BA, "Lock file left by a run killed with SIGKILL", "Does not block: the OS dropped the lock; the next run "
         "takes it and deletes the file", _t(BA, "test_lock_file_left_by_a_killed_run_does_not_block_the_next")),
    Case(BA, "'~' in path arguments the shell did not expand (quoted, generated job lists)",
         "Means the home folder for --audio, --output-folder, --save (was a literal '~' folder / 'not found')",
         _t(BA, "test_tilde_paths_mean_the_home_folder")),
    Case(BA, "Two processes, two .blend files, one --output-folder", "Both succeed, each in its own complete run folder",
         _t(BA, "test_concurrent_runs_into_one_output_folder_both_work")),
    Case(CO, "DC offset (DC only; quiet speech on a 0.5 offset)",
         "Removed with rumble below 20 Hz before the level is measured: DC only = silence; speech with an offset moves "
         "the lips as without (within 10 %)",
         _t(CO, "test_dc_offset_is_removed_before_the_level_is_measured",
            "test_the_face_moves_the_same_with_an_offset_or_at_minus_60_dbfs")),
    Case(CO, "Clean speech through the new conditioning", "Log-mel features unchanged above the lowest band (< 0.05 nat)",
         _t(CO, "test_clean_speech_is_left_as_it_was_above_the_models_mel_floor", "test_real_voices_get_no_warning")),
    Case(CO, "Speech peaking at -60 dBFS (and steady hiss at -80 dBFS)",
         "Speech normalised (lips move as at full level, within 10 %) with a 'very quiet' warning; hiss left silent",
         _t(CO, "test_speech_at_minus_60_dbfs_is_raised_and_steady_hiss_is_not",
            "test_the_face_moves_the_same_with_an_offset_or_at_minus_60_dbfs")),
    Case(CO, "Hard-clipped speech", "Warning 'clipped' (not repaired: it cannot be undone); peaks limited",
         _t(CO, "test_clipping_is_reported_and_only_limited")),
    Case(CO, "Music, tones, noise", "Warning 'does not sound like speech' (no pitch, or a held pitch); real voices get none",
         _t(CO, "test_noise_music_and_tones_are_reported_as_not_speech", "test_real_voices_get_no_warning")),
    Case(CO, "The warnings reach the user", "Summary message, operator report and panel (ERROR labels), "
         "batch CLI stderr and JSON, core CLI stderr; the run still succeeds",
         _t(CO, "test_warnings_reach_the_summary_the_panel_and_the_batch_cli",
            "test_core_cli_prints_the_warnings_and_still_writes_the_result")),
    Case(AR, "steps 0 / fractional, seed fractional, fps out of range (API, Pipeline, core CLI, Blender CLI)",
         "The same rule and message everywhere (core/arguments.py); steps=0 no longer means 'default' in the API",
         _t(AR, "test_one_rule_per_argument", "test_the_command_lines_parse_text_by_the_same_rules",
            "test_core_cli_refuses_what_the_api_refuses", "test_pipeline_refuses_zero_and_fractional_steps_and_seeds")
         + _t(BA, "test_bad_arguments_are_one_line_before_the_model_runs")),
    Case(AR, "Disk-space refusal when only the reserve is short", "States the reserve kept free and the shortfall",
         _t(AR, "test_disk_space_refusal_states_the_reserve_when_it_is_the_shortfall")),
]


@dataclass
class Outcome:
    test_id: str  # module::name[param]
    status: str  # passed | failed | skipped
    message: str = ""


def run_pytest(junit: Path, slow: bool) -> int:
    tests = sorted(str(p.relative_to(REPO_ROOT)) for p in REPO_ROOT.glob(TEST_GLOB))
    command = [sys.executable, "-m", "pytest", "-q", *tests, f"--junitxml={junit}", "-o", "junit_family=xunit1"]
    # PYTHONPATH: the tests' scripts import this checkout even with a venv made for another.
    environment = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
                   "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}
    if slow:
        environment["TEXTALKER_LONG_TESTS"] = "1"  # the 10-minute run is opt-in even in full runs
    else:
        command += ["-m", "not slow"]
    print("$", " ".join(command[1:]), flush=True)
    return subprocess.run(command, cwd=REPO_ROOT, env=environment).returncode


def read_junit(junit: Path) -> list[Outcome]:
    outcomes = []
    for testcase in ElementTree.parse(junit).getroot().iter("testcase"):
        module = testcase.get("classname", "").rsplit(".", 1)[-1]
        test_id = f"{module}::{testcase.get('name')}"
        status, message = "passed", ""
        for child in testcase:
            if child.tag in ("failure", "error"):
                status, message = "failed", child.get("message", "") or (child.text or "")
            elif child.tag == "skipped":
                status, message = "skipped", child.get("message", "")
        outcomes.append(Outcome(test_id, status, " ".join(message.split())[:300]))
    return outcomes


def _base(test_id: str) -> str:
    return test_id.split("[", 1)[0]


def observed(case: Case, outcomes: list[Outcome], slow: bool) -> str:
    matching = [o for o in outcomes if _base(o.test_id) in case.tests]
    found = {_base(o.test_id) for o in matching}
    not_collected = [t for t in case.tests if t not in found]
    parts = []
    passed = sum(o.status == "passed" for o in matching)
    if matching:
        parts.append(f"pass {passed}/{len(matching)}")
    for outcome in matching:
        if outcome.status == "failed":
            parts.append(f"**FAIL** `{outcome.test_id.split('::')[1]}`: {outcome.message}")
        elif outcome.status == "skipped":
            parts.append(f"skip `{outcome.test_id.split('::')[1]}`: {outcome.message}")
    for test in not_collected:
        why = "not run (marked slow; `--slow` runs it)" if not slow and "ten_minute_file_completes" in test else "**no such test**"
        parts.append(f"{why} `{test.split('::')[1]}`")
    return "; ".join(parts)


def _long_run_line(run: dict) -> str:
    """The paragraph quoting an end-to-end run of tools/measure_long_audio.py."""
    gib = 1024**3
    return (
        f"Measured with `tools/measure_long_audio.py --seconds {run['seconds']:g} --fps {run['fps']:g}` (the add-on's "
        f"streamed path in bpy-module mode on the template head, CPU, {run.get('threads', 1)} thread, "
        f"{run.get('steps', 1)} sampling step): {run['frames']} frames, {run['shape_keys']} shape keys and "
        f"{run['exr_files']} EXR files in {run['wall_s']:.0f} s ({run['cpu_s']:.0f} s of CPU; the wall time was "
        f"measured on a shared, loaded machine); peak memory of the whole process "
        f"{run['peak_rss_bytes'] / gib:.2f} GB (Blender, scene and model before the run: "
        f"{run['rss_before_bytes'] / gib:.2f} GB), grown by "
        f"{(run['peak_rss_bytes'] - run['rss_before_bytes']) / gib:.2f} GB against an estimate of "
        f"{run['estimate_bytes'] / gib:.2f} GB, of which the shape keys Blender holds are "
        f"{run['shape_key_bytes'] / gib:.2f} GB; EXR sequence {run['exr_disk_bytes'] / gib:.2f} GB on disk "
        f"(bound {run['estimate_disk_bytes'] / gib:.2f} GB)."
    )


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


LONG_RUN_PREFIX = "Measured with `tools/measure_long_audio.py"


def previous_long_run_line(path: Path) -> str | None:
    """The measured-long-run paragraph of the report at `path` (kept when this run measures none:
    the 10-minute measurement takes ~15 minutes and does not change with most edits)."""
    if not path.is_file():
        return None
    return next((line for line in path.read_text().splitlines() if line.startswith(LONG_RUN_PREFIX)), None)


def render(outcomes: list[Outcome], slow: bool, wall_s: float, long_run: dict | str | None) -> str:
    counts = {s: sum(o.status == s for o in outcomes) for s in ("passed", "failed", "skipped")}
    lines = [
        "# Robustness (issues #8 and #17)",
        "",
        "Generated by `tools/robustness_report.py` from a run of `tests/test_robustness_*.py`; do not edit by",
        "hand. Each case lists what the add-on must do and what its tests observed.",
        "",
        f"- Run: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {wall_s:.0f} s, "
        f"{'slow tests included' if slow else 'slow tests excluded (`--slow` includes them)'}",
        f"- Tests: {counts['passed']} passed, {counts['failed']} failed, {counts['skipped']} skipped",
        "- Command: `.venv/bin/python tools/robustness_report.py" + (" --slow`" if slow else "`"),
        "- \"Scene unchanged\" means equal snapshots of objects (with modifiers and custom properties),",
        "  meshes (vertex hashes), shape keys (names, values, coordinate hashes), actions (F-curve key hashes),",
        "  materials and node links, images, node groups and scenes before and after; \"no files\" means the",
        "  output folder holds no file afterwards.",
        "",
    ]
    for section, title in SECTIONS.items():
        lines += [f"## {title}", "", "| Case | Expected | Observed |", "|---|---|---|"]
        for case in (c for c in CASES if c.section == section):
            lines.append(f"| {_cell(case.case)} | {_cell(case.expected)} | {_cell(observed(case, outcomes, slow))} |")
        lines.append("")
        if section == L and isinstance(long_run, str):
            lines += [long_run, ""]
        elif section == L and long_run and long_run.get("mode") == "end_to_end":
            lines += [_long_run_line(long_run), ""]
        elif section == L and long_run:
            grown = long_run["peak_rss_bytes"] - long_run["rss_before_bytes"]
            lines += [
                f"Measured with `tools/measure_long_audio.py --minutes {long_run['minutes']:g} --fps {long_run['fps']:g}` "
                f"(Pipeline on the CPU, 1 thread, 1 sampling step): {long_run['frames']} frames in "
                f"{long_run['wall_s']:.0f} s; peak memory grew by {grown / 1024**3:.2f} GB against an estimate of "
                f"{long_run['estimate_pipeline_bytes'] / 1024**3:.2f} GB (result arrays "
                f"{long_run['result_bytes'] / 1024**3:.2f} GB); EXR sequence bound "
                f"{long_run['estimate_disk_bytes'] / 1024**3:.2f} GB.",
                "",
            ]
    named = {t for case in CASES for t in case.tests}
    others = [o for o in outcomes if _base(o.test_id) not in named]
    if others:
        lines += ["## Other robustness tests", "", "| Test | Observed |", "|---|---|"]
        for outcome in others:
            text = outcome.status + (f": {outcome.message}" if outcome.message else "")
            lines.append(f"| `{_cell(outcome.test_id)}` | {_cell(text)} |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slow", action="store_true", help="also run the tests marked slow")
    parser.add_argument("--long-json", type=Path, help="JSON line from tools/measure_long_audio.py to quote")
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args(argv)
    long_run = previous_long_run_line(args.output)
    if args.long_json:
        long_run = json.loads(args.long_json.read_text().strip().splitlines()[0])
    with tempfile.TemporaryDirectory(prefix="textalker-robustness-") as folder:
        junit = Path(folder) / "junit.xml"
        started = time.perf_counter()
        returncode = run_pytest(junit, args.slow)
        wall = time.perf_counter() - started
        if not junit.is_file():
            print("pytest wrote no report", file=sys.stderr)
            return returncode or 1
        outcomes = read_junit(junit)
    args.output.write_text(render(outcomes, args.slow, wall, long_run))
    print(f"wrote {args.output}")
    missing = [t for case in CASES for t in case.tests
               if not any(_base(o.test_id) == t for o in outcomes) and "ten_minute_file_completes" not in t]
    if missing:
        print("cases name tests that do not exist: " + ", ".join(missing), file=sys.stderr)
        return 1
    return 1 if any(o.status == "failed" for o in outcomes) else 0


if __name__ == "__main__":
    sys.exit(main())
