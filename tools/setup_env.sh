#!/usr/bin/env bash
# One-command set-up of the TexTalker for Blender development environment.
#
#   bash tools/setup_env.sh
#
# - creates .venv with the machine's Python 3.11 (bpy 5.0.1 is a CPython 3.11 module),
# - installs the pinned packages of tools/requirements.txt, constrained by tools/constraints.txt,
#   in ONE pip command (bpy needs numpy<2; separate commands would let pip pick numpy 2.x first),
# - installs the Debian packages the dataset tools call (flite, espeak-ng, sox) and alsa-utils (real
#   speech recordings for tools/real_speech_check.py) when run as root,
#   or prints exactly which are missing and the command that installs them.
# Idempotent: a hash of the inputs is kept in .venv/.textalker-stamp; when it matches, nothing slow runs.
#
# Environment variables (all optional):
#   TEXTALKER_PYTHON          interpreter to build the venv with (default: python3.11 on PATH)
#   TEXTALKER_VENV            venv folder (default: <repo>/.venv)
#   TEXTALKER_TORCH_INDEX_URL extra pip index for torch, e.g. https://download.pytorch.org/whl/cpu
#                             (torch==2.13.0 from PyPI alone is the CUDA build on Linux: several GB)
#   TEXTALKER_SKIP_APT=1      never call apt-get (still reports what is missing)
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv_dir="${TEXTALKER_VENV:-$repo_root/.venv}"
requirements="$repo_root/tools/requirements.txt"
constraints="$repo_root/tools/constraints.txt"
stamp_file="$venv_dir/.textalker-stamp"
# alsa-utils: its /usr/share/sounds/alsa/*.wav are real human speech for tools/real_speech_check.py
# The rest are the multilingual dataset voices (#19, tools/synthetic_textalk4d/voices*.py):
#   festival + festvox-*: Festival voices with segment timings (English kal/ked/slt-hts, Italian,
#     Czech, Finnish, Russian, Catalan, Hindi, Marathi, Telugu; about 420 MB); festival-hi/-mr/-te
#     are the Hindi/Marathi/Telugu front ends, which the NSK voices do not depend on.
#   w* word lists, hunspell-* dictionaries, dict-freedict-fin-eng (Finnish headwords) and aspell-mr:
#     words for the sentences of each language (tools/synthetic_textalk4d/text_languages.py).
# Real human speech in several languages and bands for tools/real_speech_check.py (#19; list and
# licences in tools/real_speech/sources.py, about 70 MB): Asterisk prompts recorded by voice actors
# (en/es/fr/it/ru wideband G.722; it/es/fr 8 kHz), pocketsphinx-testdata (LibriVox + CMU English
# with transcripts), klettres-data (syllables read by de/es/it/ru/en speakers).
debian_packages=(flite espeak-ng sox alsa-utils
    festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts
    festvox-itapc16k festvox-italp16k festvox-czech-dita festvox-czech-machac
    festvox-suopuhe-lj festvox-suopuhe-mv festvox-ru festvox-ca-ona-hts
    festival-hi festvox-hi-nsk festival-mr festvox-mr-nsk festival-te festvox-te-nsk
    wspanish witalian wfrench wngerman wportuguese
    hunspell-ru hunspell-cs hunspell-ca hunspell-hi hunspell-te dict-freedict-fin-eng aspell-mr
    asterisk-core-sounds-en-g722 asterisk-core-sounds-es-g722 asterisk-core-sounds-fr-g722
    asterisk-core-sounds-it-g722 asterisk-core-sounds-ru-g722 asterisk-prompt-it-menardi-wav
    asterisk-prompt-es-co asterisk-prompt-fr-armelle pocketsphinx-testdata klettres-data)

say() { printf 'setup_env: %s\n' "$*"; }
die() { printf 'setup_env: ERROR: %s\n' "$*" >&2; exit 1; }

find_python311() {
    local candidate
    for candidate in "${TEXTALKER_PYTHON:-}" python3.11 python3; do
        [ -n "$candidate" ] || continue
        command -v "$candidate" >/dev/null 2>&1 || continue
        if "$candidate" -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else 1)' 2>/dev/null; then
            command -v "$candidate"
            return 0
        fi
    done
    return 1
}

inputs_hash() {
    # Everything that changes what pip would install: the pin files, the interpreter, the extra index.
    {
        cat "$requirements" "$constraints"
        "$venv_dir/bin/python" -c 'import sys; print(sys.version)'
        printf 'torch-index=%s\n' "${TEXTALKER_TORCH_INDEX_URL:-}"
    } | sha256sum | cut -d' ' -f1
}

ensure_venv() {
    if [ -x "$venv_dir/bin/python" ]; then
        if ! "$venv_dir/bin/python" -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else 1)'; then
            die "$venv_dir exists but is not Python 3.11; remove it (rm -rf '$venv_dir') and run again"
        fi
    else
        local python311
        python311="$(find_python311)" || die "Python 3.11 not found (bpy 5.0.1 needs CPython 3.11). Install it (e.g. apt-get install python3.11 python3.11-venv, or pyenv install 3.11) or set TEXTALKER_PYTHON=/path/to/python3.11"
        say "creating $venv_dir with $python311"
        "$python311" -m venv "$venv_dir" || die "could not create the venv (on Debian/Ubuntu: apt-get install python3.11-venv)"
    fi

    local wanted
    wanted="$(inputs_hash)"
    if [ -f "$stamp_file" ] && [ "$(cat "$stamp_file")" = "$wanted" ]; then
        say "python packages up to date ($venv_dir)"
        return 0
    fi

    local pip_args=(install --disable-pip-version-check -r "$requirements" -c "$constraints")
    if [ -n "${TEXTALKER_TORCH_INDEX_URL:-}" ]; then
        pip_args+=(--extra-index-url "$TEXTALKER_TORCH_INDEX_URL")
    fi
    say "installing pinned packages (one pip command)"
    "$venv_dir/bin/python" -m pip "${pip_args[@]}"
    # No `pip check`: bpy 5.0.1's own WHEEL file says cp39, so pip check always calls it unsupported.
    printf '%s\n' "$wanted" > "$stamp_file"
    say "python packages installed; stamp written to $stamp_file"
}

debian_package_installed() {
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'
}

ensure_debian_packages() {
    local missing=() package
    for package in "${debian_packages[@]}"; do
        if command -v dpkg-query >/dev/null 2>&1; then
            debian_package_installed "$package" || missing+=("$package")
        else
            # Not a Debian system: the command on PATH is what the tools need.
            command -v "$package" >/dev/null 2>&1 || missing+=("$package")
        fi
    done
    if [ ${#missing[@]} -eq 0 ]; then
        say "debian packages present: ${debian_packages[*]}"
        return 0
    fi
    if [ "$(id -u)" -eq 0 ] && [ -z "${TEXTALKER_SKIP_APT:-}" ] && command -v apt-get >/dev/null 2>&1; then
        say "installing debian packages: ${missing[*]}"
        DEBIAN_FRONTEND=noninteractive apt-get update -q
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
        return 0
    fi
    # Not fatal: only the dataset tools (speech synthesis) need them; say exactly what to do.
    printf 'setup_env: WARNING: missing debian packages: %s\n' "${missing[*]}" >&2
    printf 'setup_env: install them with: sudo apt-get update && sudo apt-get install -y %s\n' "${missing[*]}" >&2
}

link_checkout() {
    # The checkout on the venv's import path (what `pip install -e` does): scripts in tools/ then
    # import `tools.*` and `textalker_blender` from any folder without editing sys.path. Written on
    # every run (cheap), so a moved checkout or an old venv gets the right path.
    local site_packages
    site_packages="$("$venv_dir/bin/python" -c 'import sysconfig; print(sysconfig.get_path("purelib"))')"
    printf '%s\n' "$repo_root" > "$site_packages/textalker-checkout.pth"
}

ensure_venv
link_checkout
ensure_debian_packages
say "ready: $venv_dir/bin/python"
