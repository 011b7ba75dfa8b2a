"""The one benchmark method every script in ``benchmarks/`` uses.

Configurations (the baseline and its candidates) run interleaved, one call each per round,
so load that changes during a run hits every configuration alike; each round's ratio to the
baseline is taken within that round. Reported per configuration: the median value and its
min-max over rounds, and the median of the per-round ratios with their min-max. The header
records the machine, torch's thread count and the load average before and after, because a
figure without them cannot be compared with a re-run.

Each call returns one value (seconds, images/s, ...); the ratio is value / baseline value of
the same round, so pass speeds for "x faster" and seconds for "overhead".
"""

from __future__ import annotations

import os
import platform
import statistics
from collections.abc import Callable
from dataclasses import asdict, dataclass, field


@dataclass(frozen=True)
class Stats:
    """One configuration's figures over all rounds."""

    median: float
    lo: float
    hi: float
    ratio: float  # median of the per-round ratios to the baseline
    ratio_lo: float
    ratio_hi: float


@dataclass
class Result:
    """Per-round values, their summary, and where and under what load they were taken."""

    baseline: str
    values: dict[str, list[float]]
    stats: dict[str, Stats]
    machine: dict[str, object] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {
            "machine": self.machine,
            "baseline": self.baseline,
            "stats": {k: asdict(v) for k, v in self.stats.items()},
            "values": self.values,
        }


def summarize(values: dict[str, list[float]], baseline: str) -> dict[str, Stats]:
    """Median and range per configuration, and the ratio to ``baseline`` computed round by round."""
    base = values[baseline]
    if not base:
        raise ValueError("summarize: no rounds measured")
    out = {}
    for name, vals in values.items():
        if len(vals) != len(base):
            raise ValueError(f"summarize: {name} has {len(vals)} rounds, {baseline} has {len(base)}")
        ratios = [v / b for v, b in zip(vals, base, strict=True)]
        out[name] = Stats(
            median=statistics.median(vals),
            lo=min(vals),
            hi=max(vals),
            ratio=statistics.median(ratios),
            ratio_lo=min(ratios),
            ratio_hi=max(ratios),
        )
    return out


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo on Linux), for the header."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict[str, object]:
    """CPU model, core count, torch threads and the 1-minute load average now."""
    import torch

    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "load_before": round(os.getloadavg()[0], 2),
    }


def rounds_order(names: list[str], r: int) -> list[str]:
    """Round ``r``'s order: rotated by one each round so no configuration always runs first."""
    k = r % len(names)
    return names[k:] + names[:k]


def measure(
    calls: dict[str, Callable[[], float]],
    baseline: str,
    rounds: int = 5,
    on_round: Callable[[int, dict[str, float]], None] | None = None,
) -> Result:
    """Run every call once per round, interleaved, and summarize against ``baseline``."""
    if rounds < 1:
        raise ValueError("measure: rounds must be >= 1")
    if baseline not in calls:
        raise ValueError(f"measure: baseline {baseline!r} is not one of {list(calls)}")
    machine = machine_info()
    names = list(calls)
    values: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        this_round = {}
        for name in rounds_order(names, r):
            this_round[name] = float(calls[name]())
            values[name].append(this_round[name])
        if on_round:
            on_round(r, this_round)
    return Result(baseline, values, summarize(values, baseline), finish(machine))


def finish(machine: dict[str, object]) -> dict[str, object]:
    """Record the load average after the run in ``machine`` (from :func:`machine_info`) and return it."""
    machine["load_after"] = round(os.getloadavg()[0], 2)
    return machine


def machine_line(machine: dict[str, object], rounds: int | None = None) -> str:
    """The header for ``machine``; ``rounds`` None says the figures are single runs, not interleaved rounds.

    Eval harnesses (toy_eval, toy_world, attack_cost) time whole evaluations inside the
    library, one method after another; they print this line so their seconds carry the
    machine and load they were taken under, and say that they are not interleaved.
    """
    m = machine
    gpu = f", GPU {m['gpu']}" if m.get("gpu") else ""
    after = m.get("load_after", "?")
    how = f"{rounds} interleaved rounds" if rounds else "one run, configurations in sequence (not interleaved)"
    return (
        f"machine: {m['cpu']}, {m['cores']} cores{gpu}; torch {m['torch']}, {m['torch_threads']} thread(s); "
        f"load average {m['load_before']} before, {after} after; {how}"
    )


def header(result: Result) -> str:
    """One line naming the machine, threads and load, to print above every table."""
    return machine_line(result.machine, len(result.values[result.baseline]))


def table(result: Result, unit: str, fmt: str = ".3f", ratio_label: str | None = None) -> str:
    """Median, min-max, and ratio to the baseline with its min-max, one row per configuration."""
    ratio_label = ratio_label or f"x {result.baseline}"
    rows = [f"{'config':<18} {unit + ' median':>16} {'min-max':>19} {ratio_label:>14} {'ratio min-max':>15}"]
    for name, s in result.stats.items():
        span = f"{s.lo:{fmt}}-{s.hi:{fmt}}"
        rspan = f"{s.ratio_lo:.3f}-{s.ratio_hi:.3f}"
        rows.append(f"{name:<18} {s.median:16{fmt}} {span:>19} {s.ratio:14.3f} {rspan:>15}")
    return "\n".join(rows)
