"""What every benchmark script shares: its options, the median-of-N runner, and
the JSON line it prints per figure.

A figure is measured ``runs`` times and reported as the median. When it has a
baseline, the two are measured alternately in the same process (triact, baseline,
triact, ...), so that a noisy neighbour or a slow warm-up weighs on both alike.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import statistics
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TextIO

import attrs


@attrs.frozen
class Options:
    runs: int
    quick: bool


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def parse_options(description: str, argv: Sequence[str] | None = None) -> Options:
    """The command line every benchmark script takes: ``--runs N`` and ``--quick``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--runs",
        type=_positive_int,
        default=5,
        help="runs per figure; the median is reported (default: 5)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="small sizes, for a smoke test (figures are not comparable to a full run)",
    )
    args = parser.parse_args(argv)
    return Options(runs=args.runs, quick=args.quick)


@attrs.frozen
class Target:
    """A bound on one field of a figure's line, such as ``ratio <= 1`` or
    ``median >= 100000``."""

    field: str
    op: Literal["<=", ">=", "=="]
    bound: float

    def met(self, line: Mapping[str, Any]) -> bool:
        value = line[self.field]
        if value is None:
            return False
        if self.op == "<=":
            return bool(value <= self.bound)
        if self.op == ">=":
            return bool(value >= self.bound)
        return bool(value == self.bound)

    def __str__(self) -> str:
        return f"{self.field} {self.op} {self.bound:g}"


def measure(runs: int, run: Callable[[], float]) -> list[float]:
    """Call ``run`` ``runs`` times, each from a freshly collected heap."""
    results = []
    for _ in range(runs):
        gc.collect()
        results.append(run())
    return results


def measure_pair(
    runs: int, run: Callable[[], float], baseline: Callable[[], float]
) -> tuple[list[float], list[float]]:
    """Measure ``run`` and ``baseline`` ``runs`` times each, alternately."""
    results: list[float] = []
    baseline_results: list[float] = []
    for _ in range(runs):
        results.extend(measure(1, run))
        baseline_results.extend(measure(1, baseline))
    return results, baseline_results


def _sig(value: float) -> float:
    """``value`` to 4 significant digits: what the machine's noise leaves meaningful."""
    return float(f"{value:.4g}") if math.isfinite(value) else value


def figure(
    bench: str,
    unit: str,
    runs: Sequence[float],
    *,
    baseline: str | None = None,
    baseline_runs: Sequence[float] | None = None,
    target: Target | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """One benchmark's line: the median of ``runs``, its baseline's median and the
    ratio of the two (triact / baseline) if there is one, and whether ``target`` is met.

    Every line has the same keys (``None`` where a baseline or target is absent),
    followed by the figure's own ``extra`` keys.
    """
    median = statistics.median(runs)
    baseline_median = statistics.median(baseline_runs) if baseline_runs else None
    line: dict[str, Any] = {
        "bench": bench,
        "unit": unit,
        "median": _sig(median),
        "runs": [_sig(value) for value in runs],
        "baseline": baseline,
        "baseline_median": None if baseline_median is None else _sig(baseline_median),
        "baseline_runs": None if baseline_runs is None else [_sig(v) for v in baseline_runs],
        "ratio": None if not baseline_median else round(median / baseline_median, 3),
        **extra,
    }
    line["target"] = None if target is None else str(target)
    line["ok"] = True if target is None else target.met(line)
    return line


def cpu_seconds(pid: int) -> float:
    """The CPU time (user + system) a process has used so far (Linux; NaN elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return math.nan
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile of ``values`` (nearest rank; NaN for none)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def emit(line: Mapping[str, Any], out: TextIO | None = None) -> None:
    """Print ``line`` as one JSON object on one line, at once (not at exit)."""
    stream = sys.stdout if out is None else out
    stream.write(json.dumps(line) + "\n")
    stream.flush()
