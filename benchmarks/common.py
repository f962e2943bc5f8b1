"""What the benchmarks share: a latency summary."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass


@dataclass
class Summary:
    """Summary of timed samples, in the unit chosen by ``of`` (µs by default)."""

    n: int
    median: float
    p90: float
    mean: float
    min: float
    max: float

    @classmethod
    def of(cls, samples_ns: list[int], unit_ns: int = 1_000) -> Summary:
        data = sorted(samples_ns)
        return cls(
            n=len(data),
            median=statistics.median(data) / unit_ns,
            p90=data[max(0, math.ceil(0.90 * len(data)) - 1)] / unit_ns,  # nearest rank
            mean=statistics.fmean(data) / unit_ns,
            min=data[0] / unit_ns,
            max=data[-1] / unit_ns,
        )
