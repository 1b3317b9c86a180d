"""Figures from raw measurements: per-message rates and costs, medians, histogram quantiles."""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field


@dataclass
class Sample:
    """One contender's run: what it sustained over its steady-state window."""

    contender: str
    window_frames: int
    window_s: float
    cpu_s: float
    peak_rss_mb: float
    complete: bool
    note: str = ""
    wait_s: float = 0.0
    """Runnable but waiting for the CPU during the window (others' work on the core)."""
    thread_us_per_msg: dict[str, float] = field(default_factory=dict)
    """CPU per message by thread name, where measured (ssmd-connector)."""

    @property
    def wait_share(self) -> float:
        return self.wait_s / self.window_s if self.window_s > 0 else 0.0

    @property
    def busy(self) -> float:
        """CPU share of the window: near 1 means msg/s is the contender's own ceiling."""
        return self.cpu_s / self.window_s if self.window_s > 0 else 0.0

    @property
    def msgs_per_s(self) -> float:
        return self.window_frames / self.window_s if self.window_s > 0 else 0.0

    @property
    def cpu_us_per_msg(self) -> float:
        return self.cpu_s / self.window_frames * 1e6 if self.window_frames else math.nan


@dataclass
class Summary:
    """A contender over every round: medians and the spread the noise left."""

    contender: str
    msgs_per_s: float
    cpu_us_per_msg: float
    peak_rss_mb: float
    complete: bool
    runs: int
    msgs_per_s_range: tuple[float, float]
    cpu_us_range: tuple[float, float]
    busy: float
    wait_share: float
    notes: list[str] = field(default_factory=list)
    thread_us_per_msg: dict[str, float] = field(default_factory=dict)


def summarize(contender: str, samples: Sequence[Sample]) -> Summary:
    rates = [s.msgs_per_s for s in samples]
    costs = [s.cpu_us_per_msg for s in samples]
    return Summary(
        contender=contender,
        msgs_per_s=statistics.median(rates),
        cpu_us_per_msg=statistics.median(costs),
        peak_rss_mb=max(s.peak_rss_mb for s in samples),
        complete=all(s.complete for s in samples),
        runs=len(samples),
        msgs_per_s_range=(min(rates), max(rates)),
        cpu_us_range=(min(costs), max(costs)),
        busy=statistics.median(s.busy for s in samples),
        wait_share=max(s.wait_share for s in samples),
        notes=sorted({s.note for s in samples if s.note}),
        thread_us_per_msg={
            name: statistics.median(s.thread_us_per_msg.get(name, 0.0) for s in samples)
            for name in sorted({n for s in samples for n in s.thread_us_per_msg})
        },
    )


@dataclass(frozen=True)
class Histogram:
    """A Prometheus histogram: cumulative counts per upper bound (``le``), +Inf last."""

    bounds: tuple[float, ...]
    cumulative: tuple[float, ...]
    total: float
    count: float

    @classmethod
    def from_metrics(cls, metrics: Mapping[str, float], name: str) -> Histogram:
        buckets: list[tuple[float, float]] = []
        count = total = 0.0
        for key, value in metrics.items():
            if key.startswith(f"{name}_bucket{{"):
                le = key.split('le="', 1)[1].split('"', 1)[0]
                buckets.append((math.inf if le == "+Inf" else float(le), value))
            elif key.startswith(f"{name}_count"):
                count = value
            elif key.startswith(f"{name}_sum"):
                total = value
        buckets.sort()
        return cls(tuple(b for b, _ in buckets), tuple(c for _, c in buckets), total, count)

    def quantile(self, q: float) -> float:
        """Linear interpolation inside the bucket holding the q-th observation.

        As Prometheus' ``histogram_quantile``: observations are assumed spread evenly
        between a bucket's lower and upper bound (0 for the first bucket). A quantile
        in the +Inf bucket returns the last finite bound (a lower bound of the truth).
        """
        if not self.count:
            return math.nan
        rank = q * self.count
        lower, below = 0.0, 0.0
        for bound, cumulative in zip(self.bounds, self.cumulative, strict=True):
            if cumulative >= rank:
                if math.isinf(bound):
                    return lower
                inside = cumulative - below
                return lower + (bound - lower) * ((rank - below) / inside if inside else 1.0)
            lower, below = bound, cumulative
        return lower

    def fraction_at_most(self, bound: float) -> float:
        """Share of observations <= ``bound`` when ``bound`` is a bucket bound (exact)."""
        for b, cumulative in zip(self.bounds, self.cumulative, strict=True):
            if b == bound:
                return cumulative / self.count if self.count else math.nan
        return math.nan
