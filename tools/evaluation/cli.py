"""Command-line options the measuring tools share (tools/evaluate.py, tools/bench.py,
tools/real_speech_check.py): where the report goes, and what runs the model."""

from __future__ import annotations

from pathlib import Path


def add_report_arguments(parser, out_default: Path) -> None:
    """--out: the Markdown report the tool writes; --json: every number it measured."""
    parser.add_argument("--out", type=Path, default=out_default, help="the Markdown report to write")
    parser.add_argument("--json", type=Path, default=None, help="also write the numbers as JSON here")


def add_device_arguments(parser, threads_default: int | None = None,
                         device_help: str = "torch device: cpu or cuda (timings are per device)") -> None:
    """--device, and --threads (torch CPU threads) unless `threads_default` is None."""
    parser.add_argument("--device", default="cpu", help=device_help)
    if threads_default is not None:
        parser.add_argument("--threads", type=int, default=threads_default, help="torch CPU threads")
