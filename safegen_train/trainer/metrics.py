"""``metrics.jsonl``: a line per logged train step and per validation, also sent to the trackers.

A resumed run logs the steps after its checkpoint again, so it first drops the lines logged
after that step (:func:`truncate_metrics`): the file holds each step once, as the
uninterrupted run's would.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from safegen.core.io import append_line, atomic_write_text

# The name the training log lines have always carried ("INFO safegen_train.train: ..."), whichever
# trainer module writes them.
_logger = logging.getLogger("safegen_train.train")


def truncate_metrics(path: Path, last_step: int) -> None:
    """Drop metrics lines logged after ``last_step``: a resumed run logs those steps again, and
    metrics.jsonl should hold each step once, as the uninterrupted run would."""
    if not path.is_file():
        return
    kept, dropped = [], 0
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            step = json.loads(line).get("step", 0)
        except (ValueError, AttributeError):
            step = 0  # not ours to judge: keep it
        if isinstance(step, int) and step > last_step:
            dropped += 1
        else:
            kept.append(line)
    if dropped:
        atomic_write_text(path, "".join(f"{line}\n" for line in kept))
        _logger.info("resume: dropped %d metrics line(s) logged after step %d", dropped, last_step)


class MetricsLog:
    """Writes the metrics lines (main process only) and times the samples/s of each train line.

    ``term_samples`` (records feeding each loss term) goes into the first train line only,
    once per run and once per resume.
    """

    def __init__(self, path: Path, accelerator: Any, *, report_to: list[str], term_samples: dict[str, int] | None):
        self.path, self.accelerator, self.report_to = path, accelerator, report_to
        self.term_samples = term_samples
        self.restart_window()

    def write(self, record: dict[str, Any]) -> None:
        if self.accelerator.is_main_process:
            append_line(self.path, json.dumps(record))
            if self.report_to:
                values = {k: v for k, v in record.items() if isinstance(v, (int, float))}
                self.accelerator.log(values, step=record["step"])

    def restart_window(self) -> None:
        """Start timing the samples of the next train line."""
        self.window_start, self.window_samples = time.perf_counter(), 0

    def count(self, samples: int) -> None:
        self.window_samples += samples

    def samples_per_s(self) -> float:
        """Samples per second since the window started."""
        return self.window_samples / max(time.perf_counter() - self.window_start, 1e-9)

    def take_term_samples(self) -> dict[str, int] | None:
        """The records-per-term counts the first time, None after."""
        counts, self.term_samples = self.term_samples, None
        return counts
