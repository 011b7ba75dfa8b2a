"""The shared benchmark method's arithmetic (benchmarks/_bench.py), on fake timings: no clocks involved."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import _bench  # noqa: E402


def test_median_range_and_per_round_ratio():
    values = {"base": [2.0, 4.0, 1.0, 3.0, 5.0], "cand": [4.0, 4.0, 3.0, 3.0, 15.0]}
    stats = _bench.summarize(values, "base")
    b, c = stats["base"], stats["cand"]
    assert (b.median, b.lo, b.hi) == (3.0, 1.0, 5.0)
    assert (b.ratio, b.ratio_lo, b.ratio_hi) == (1.0, 1.0, 1.0)
    assert (c.median, c.lo, c.hi) == (4.0, 3.0, 15.0)
    # per-round ratios 2, 1, 3, 1, 3: the ratio is their median, not median(cand) / median(base) = 1.333
    assert (c.ratio, c.ratio_lo, c.ratio_hi) == (2.0, 1.0, 3.0)


def test_even_number_of_rounds_takes_the_middle_mean():
    stats = _bench.summarize({"a": [1.0, 2.0, 4.0, 8.0], "b": [1.0, 1.0, 1.0, 1.0]}, "a")
    assert stats["a"].median == 3.0
    assert stats["b"].ratio == pytest.approx((0.5 + 0.25) / 2)
    assert (stats["b"].ratio_lo, stats["b"].ratio_hi) == (0.125, 1.0)


def test_measure_interleaves_rotates_and_records_the_machine():
    order: list[str] = []
    fake = {"x": iter([1.0, 2.0, 3.0, 4.0, 5.0]), "y": iter([2.0, 2.0, 6.0, 4.0, 20.0])}
    calls = {n: (lambda n=n: order.append(n) or next(fake[n])) for n in fake}
    result = _bench.measure(calls, baseline="x", rounds=5)
    assert order == ["x", "y", "y", "x", "x", "y", "y", "x", "x", "y"]  # one of each per round, rotated
    assert result.values == {"x": [1.0, 2.0, 3.0, 4.0, 5.0], "y": [2.0, 2.0, 6.0, 4.0, 20.0]}
    assert (result.stats["y"].ratio, result.stats["y"].ratio_lo, result.stats["y"].ratio_hi) == (2.0, 1.0, 4.0)
    for key in ("cpu", "cores", "torch_threads", "load_before", "load_after"):
        assert key in result.machine
    assert "5 interleaved rounds" in _bench.header(result)
    lines = _bench.table(result, "s").splitlines()
    assert len(lines) == 3 and "2.000" in lines[2] and "1.000-4.000" in lines[2]


def test_mismatched_rounds_and_unknown_baseline_are_refused():
    with pytest.raises(ValueError, match="b has 1 rounds"):
        _bench.summarize({"a": [1.0, 2.0], "b": [1.0]}, "a")
    with pytest.raises(ValueError, match="baseline 'z'"):
        _bench.measure({"a": lambda: 1.0}, baseline="z")


def test_machine_line_says_whether_figures_were_interleaved():
    machine = _bench.finish(_bench.machine_info())
    assert isinstance(machine["load_after"], float)
    single = _bench.machine_line(machine)
    assert "not interleaved" in single and f"load average {machine['load_before']} before" in single
    assert _bench.machine_line(machine, rounds=7).endswith("7 interleaved rounds")
