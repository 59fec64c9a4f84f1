"""CI runs the README's test command, word for word: the two cannot drift apart."""

from __future__ import annotations

import re
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def readme_test_command() -> str:
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("Set up and run the whole test suite"):]
    return re.search(r"```bash\n(.+?)\n```", section, re.S).group(1).strip()


def test_ci_runs_the_readme_test_command():
    command = readme_test_command()
    assert command.startswith("bash tools/setup_env.sh && .venv/bin/python -m pytest -q tests")
    assert "tools/compat_matrix.py --smoke" in command  # the oldest and newest Blender too
    executed = [line.strip() for line in (REPO_ROOT / ".ci" / "run").read_text().splitlines()
                if line.strip() and not line.lstrip().startswith("#")]
    assert command in executed
