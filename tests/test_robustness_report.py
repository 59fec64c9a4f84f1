"""tools/robustness_report.py: every case names real tests, JUnit results become the table."""

from __future__ import annotations

import ast
from pathlib import Path

from tools import robustness_report as report

TESTS = Path(__file__).resolve().parent


def _test_functions() -> set[str]:
    names = set()
    for path in TESTS.glob("test_robustness_*.py"):
        tree = ast.parse(path.read_text())
        names |= {f"{path.stem}::{node.name}" for node in tree.body
                  if isinstance(node, ast.FunctionDef) and node.name.startswith("test_")}
    return names


def test_every_case_names_existing_tests_and_every_section_has_cases():
    existing = _test_functions()
    named = [test for case in report.CASES for test in case.tests]
    assert [t for t in named if t not in existing] == []
    assert {case.section for case in report.CASES} == set(report.SECTIONS)


def test_junit_outcomes_become_the_observed_column(tmp_path):
    junit = tmp_path / "junit.xml"
    junit.write_text(
        """<?xml version="1.0" encoding="utf-8"?>
<testsuites><testsuite name="pytest">
 <testcase classname="tests.test_robustness_audio" name="test_missing_file_and_folder" time="0.1"/>
 <testcase classname="tests.test_robustness_faults" name="test_disk_full_while_writing_exrs[tmpfs]" time="0.1">
  <skipped message="cannot mount a small tmpfs here"/></testcase>
 <testcase classname="tests.test_robustness_faults" name="test_disk_full_while_writing_exrs[dev_full]" time="0.1">
  <failure message="AssertionError: files left | behind">trace</failure></testcase>
</testsuite></testsuites>"""
    )
    outcomes = report.read_junit(junit)
    assert [(o.test_id, o.status) for o in outcomes] == [
        ("test_robustness_audio::test_missing_file_and_folder", "passed"),
        ("test_robustness_faults::test_disk_full_while_writing_exrs[tmpfs]", "skipped"),
        ("test_robustness_faults::test_disk_full_while_writing_exrs[dev_full]", "failed"),
    ]
    disk_full = next(c for c in report.CASES if "Disk full" in c.case)
    observed = report.observed(disk_full, outcomes, slow=False)
    assert observed.startswith("pass 0/2")
    assert "**FAIL** `test_disk_full_while_writing_exrs[dev_full]`: AssertionError: files left | behind" in observed
    assert "skip `test_disk_full_while_writing_exrs[tmpfs]`: cannot mount a small tmpfs here" in observed
    markdown = report.render(outcomes, slow=False, wall_s=1.0, long_run=None)
    assert "1 passed, 1 failed, 1 skipped" in markdown
    assert "files left \\| behind" in markdown  # a pipe in a message does not break the table
    assert "**no such test**" in markdown  # cases whose tests did not run say so
