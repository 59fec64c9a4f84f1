"""The loop every training stage runs (VQ, decoder refinement, latent diffusion).

A stage builds its model, data and optimiser, resumes them from its checkpoint, then hands
`StageLoop.run` three callables: one optimisation step, a checkpoint writer and (optionally) a
validation. The loop owns what the stages share: stopping (the step budget, SIGTERM / SIGINT, the
time limit; agreed across ranks), the progress bar, averaged log records every `log_every` steps
(with throughput and CPU time), validation every `validate_every` steps, a checkpoint every
`checkpoint_every` steps and a final one. The order of these calls is fixed, so a stopped and
resumed run takes the same steps as an uninterrupted one.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

from .common import Distributed, JsonlLog, RunFolder, StopFlag, format_metrics


@dataclass
class StepReport:
    """What one optimisation step tells the loop."""

    means: dict[str, float]  # averaged over the steps of a log window (losses, perplexity)
    sums: dict[str, float] = field(default_factory=dict)  # summed over the window (revived codes)
    frames: int = 0  # frames the step consumed, all ranks together (frames_per_s)
    data_seconds: float | None = None  # time spent producing its data (data_fraction), if measured


@dataclass
class StageLoop:
    name: str  # progress-bar and console label, e.g. "VQ motion"
    section: dict[str, Any]  # the stage's config section: log_every, validate_every, checkpoint_every
    dist: Distributed
    log: JsonlLog
    stop: StopFlag
    total_steps: int
    step: int  # steps already done (resumed from the checkpoint)
    console_keys: list[str]  # which record entries the console line shows
    progress_bar: bool = True

    def __post_init__(self) -> None:
        self.start_step = self.step
        self.reason = "steps reached"

    def run(
        self,
        train_step: Callable[[int], StepReport],
        save: Callable[[int], None],
        validate: Callable[[int], dict | None] | None = None,
        log_extra: Callable[[int], dict[str, Any]] | None = None,
        postfix: Callable[[dict[str, Any]], dict[str, str]] | None = None,
        stop_check: Callable[[int], str | None] | None = None,
        also_validate_at: frozenset[int] = frozenset(),
    ) -> str:
        """Run until the budget or a stop request; returns why it stopped.

        `train_step(done)` takes one step (`done` = steps taken before it); `save(step)` writes a
        checkpoint; `validate(step)` returns metrics to log (or None: nothing this time);
        `log_extra(step)` adds entries (epoch, learning rate) to each train record; `postfix`
        picks the progress bar's figures from a record; `stop_check(step)` can end the session
        early (a reason) and `also_validate_at` adds validation steps (a stage boundary)."""
        from tqdm import tqdm

        dist = self.dist
        bar = tqdm(total=self.total_steps, initial=self.step, desc=self.name, unit="step",
                   disable=not (self.progress_bar and dist.is_main), dynamic_ncols=True)
        means: dict[str, float] = {}
        sums: dict[str, float] = {}
        count, frames, data_seconds, data_measured = 0, 0, 0.0, False
        window_time, window_cpu = time.monotonic(), time.process_time()
        log_every = int(self.section["log_every"])
        validate_every = int(self.section["validate_every"])
        checkpoint_every = int(self.section["checkpoint_every"])
        try:
            while self.step < self.total_steps:
                reason_now = self.stop.should_stop() or (stop_check(self.step) if stop_check else None)
                if dist.any(reason_now is not None):
                    self.reason = reason_now or "stop requested on another rank"
                    break
                report = train_step(self.step)
                self.step += 1
                step = self.step
                bar.update(1)
                for key, value in report.means.items():
                    means[key] = means.get(key, 0.0) + float(value)
                for key, value in report.sums.items():
                    sums[key] = sums.get(key, 0.0) + float(value)
                count += 1
                frames += report.frames
                if report.data_seconds is not None:
                    data_seconds += report.data_seconds
                    data_measured = True
                if step % log_every == 0 or step == self.total_steps:
                    now = time.monotonic()
                    seconds = max(now - window_time, 1e-9)
                    record: dict[str, Any] = {key: value / count for key, value in means.items()}
                    record.update(sums)
                    record.update(log_extra(step) if log_extra else {})
                    record.update(event="train", step=step, steps_per_s=count / seconds,
                                  cpu_s_per_step=(time.process_time() - window_cpu) / count)
                    if frames:
                        record["frames_per_s"] = frames / seconds
                    if data_measured:
                        record["data_fraction"] = data_seconds / seconds
                    if postfix is not None:
                        bar.set_postfix(**postfix(record))
                    self.log.write(record, f"step {step}  " + format_metrics(record, self.console_keys))
                    means, sums = {}, {}
                    count, frames, data_seconds, data_measured = 0, 0, 0.0, False
                    window_time, window_cpu = now, time.process_time()
                if validate is not None and (step % validate_every == 0 or step == self.total_steps
                                             or step in also_validate_at):
                    metrics = validate(step)
                    if metrics is not None:
                        self.log.write({"event": "validation", "step": step, **metrics},
                                       f"step {step}  validation  " + format_metrics(metrics, list(metrics)))
                if step % checkpoint_every == 0 and step < self.total_steps:
                    save(step)
        finally:
            bar.close()
            self.stop.restore()
        return self.reason

    def final_save(self, run: RunFolder, save: Callable[[int], None]) -> None:
        """The checkpoint at the end of a session. A session that took no step (the budget was
        already reached) leaves the checkpoint byte-identical: stage 2's latent cache is keyed on
        the VQ weights' SHA-256, and re-running retrain.sh then only re-exports."""
        if self.step > self.start_step or not run.has_checkpoint():
            save(self.step)

    @property
    def steps_this_session(self) -> int:
        return self.step - self.start_step
