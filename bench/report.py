"""The printed table, the ratios against issue 5's targets, and the JSON a later run compares to.

Absolute figures on a shared 2-core machine move with whatever else runs; ratios of
contenders measured in the same run, on the same core, against the same sender, are
what the targets are about, so those lead.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any

from bench.archive_bench import ArchiveResult
from bench.archive_bench import render as render_archive
from bench.measure import Summary
from bench.operator_bench import OperatorResult

LABELS = {
    "sender": "sender ceiling (raw socket reader)",
    "bare": "limit: websockets recv() loop",
    "frames": "floor: websockets frame parser",
    "picows": "limit: picows loop",
    "naive": "naive recorder",
    "collector": "ssmd-connector",
    "collector@20k": "ssmd-connector @ 20k msg/s offered",
}


@dataclass
class Latency:
    """Receipt-to-write at a fixed offered load, from the collector's own /metrics."""

    offered_msgs_per_s: float
    samples: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    mean_ms: float
    share_within_5ms: float
    peak_rss_mb: float
    complete: bool
    note: str = ""
    cpu_wait_share: float = 0.0
    """Share of the window the collector was runnable but another process had its core."""


@dataclass
class Target:
    name: str
    figure: str
    goal: str
    verdict: str  # PASS, FAIL or N/A


@dataclass
class Results:
    meta: dict[str, Any]
    summaries: dict[str, Summary] = field(default_factory=dict)
    samples: list[dict[str, Any]] = field(default_factory=list)
    latency: Latency | None = None
    operator: OperatorResult | None = None
    archive: ArchiveResult | None = None
    skipped: dict[str, str] = field(default_factory=dict)
    targets: list[Target] = field(default_factory=list)
    ratios: dict[str, float] = field(default_factory=dict)


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def evaluate(r: Results) -> None:
    """Fill ``r.ratios`` and ``r.targets`` from the summaries, latency and operator run."""
    s = r.summaries
    bare, naive, coll = s.get("bare"), s.get("naive"), s.get("collector")
    if bare and coll:
        r.ratios["collector_over_limit_cpu"] = coll.cpu_us_per_msg / bare.cpu_us_per_msg
    if naive and coll:
        r.ratios["naive_over_collector_cpu"] = naive.cpu_us_per_msg / coll.cpu_us_per_msg
    if "frames" in s and coll:
        r.ratios["collector_over_parser_floor_cpu"] = (
            coll.cpu_us_per_msg / s["frames"].cpu_us_per_msg
        )
    if "picows" in s and bare:
        r.ratios["picows_over_websockets_cpu"] = s["picows"].cpu_us_per_msg / bare.cpu_us_per_msg
    if coll and "sender" in s:
        r.ratios["collector_over_sender_rate"] = coll.msgs_per_s / s["sender"].msgs_per_s
    if "collector_over_limit_cpu" in r.ratios:
        x = r.ratios["collector_over_limit_cpu"]
        r.targets.append(
            Target("collector / limit, CPU per message", f"{x:.2f}x", "<= 1.4x", _verdict(x <= 1.4))
        )
    if "naive_over_collector_cpu" in r.ratios:
        x = r.ratios["naive_over_collector_cpu"]
        r.targets.append(
            Target("naive / collector, CPU per message", f"{x:.2f}x", ">= 1.6x", _verdict(x >= 1.6))
        )
    if coll:
        # Any contender's sustained rate is a rate the sender managed to offer.
        offered = max(x.msgs_per_s for k, x in s.items() if k != "collector")
        figure = (
            f"{coll.msgs_per_s:,.0f} msg/s, {'no loss' if coll.complete else 'LOSS'} "
            f"(1/CPU: {1e6 / coll.cpu_us_per_msg:,.0f})"
        )
        if offered < 150_000 and coll.complete:
            verdict = f"N/A (sender offers {offered:,.0f})"
        else:
            verdict = _verdict(coll.msgs_per_s >= 150_000 and coll.complete)
        r.targets.append(Target("collector sustained, zero loss", figure, ">= 150,000", verdict))
    if r.latency:
        lat = r.latency
        r.targets.append(
            Target(
                "p99 receipt-to-write @ 20k msg/s",
                f"{lat.p99_ms:.2f} ms ({lat.share_within_5ms:.2%} <= 5 ms)",
                "<= 5 ms",
                _verdict(lat.share_within_5ms >= 0.99 and lat.complete),
            )
        )
        r.targets.append(
            Target(
                "peak RSS @ 20k msg/s",
                f"{lat.peak_rss_mb:.1f} MB",
                "<= 80 MB",
                _verdict(lat.peak_rss_mb <= 80),
            )
        )


def _range(lo: float, hi: float, fmt: str) -> str:
    return f"{format(lo, fmt)}-{format(hi, fmt)}"


def render(r: Results) -> str:
    out: list[str] = []
    m = r.meta
    out.append(
        f"ssmd benchmark ({'quick' if m['quick'] else 'full'}) {m['started']}  git {m['git']}"
    )
    out.append(
        f"  cpu: {m['cpu']} x{m['cores']}; receiver core {m['receiver_core']}, "
        f"sender core {m['sender_core']}; load avg {m['load_before']} -> {m['load_after']}"
    )
    out.append(
        f"  python {m['python']}, websockets {m['websockets']}, picows {m['picows']}; "
        f"{m['messages']:,} data frames x {m['rounds']} round(s), {m['markets']} markets, "
        f"frames {m['frame_bytes'][0]}/{m['frame_bytes'][1]}/{m['frame_bytes'][2]} B "
        f"(min/mean/max), mix {m['mix']}"
    )
    out.append("")
    header = (
        f"{'contender':<36} {'msg/s':>9} {'(range)':>17} {'CPU us/msg':>10} "
        f"{'(range)':>11} {'busy':>5} {'wait':>5} {'RSS MB':>6}  complete?"
    )
    out.append(header)
    out.append("-" * len(header))
    for key, label in LABELS.items():
        x = r.summaries.get(key)
        if x is None:
            if key in r.skipped:
                out.append(f"{label:<36} skipped: {r.skipped[key]}")
            continue
        done = "yes" if x.complete else "NO: " + "; ".join(x.notes)[:80]
        out.append(
            f"{label:<36} {x.msgs_per_s:>9,.0f} {_range(*x.msgs_per_s_range, ',.0f'):>17} "
            f"{x.cpu_us_per_msg:>10.2f} {_range(*x.cpu_us_range, '.2f'):>11} "
            f"{x.busy:>5.0%} {x.wait_share:>5.1%} {x.peak_rss_mb:>6.1f}  {done}"
        )
    for key in ("collector", "collector@20k"):
        x = r.summaries.get(key)
        if x is not None and x.thread_us_per_msg:
            split = ", ".join(f"{n} {v:.2f}" for n, v in x.thread_us_per_msg.items())
            out.append(f"  {LABELS[key]}: CPU us/msg by thread: {split}")
    out.append(
        "  medians over rounds (range: min-max). CPU: user+system of the whole process over "
        "its steady-state window.\n  busy: CPU/wall in the window (~100%: msg/s is the "
        "contender's own ceiling; less: it waited for the sender). wait: worst share of the\n"
        "  window spent runnable while another process held its core (noise from other work). "
        "RSS: peak VmHWM.\n  complete: frame count (limits, sender: bytes), archive lines + "
        "digest of every frame in order + seq per sid + counts per type (recorders)."
    )
    if r.latency:
        lat = r.latency
        out.append("")
        out.append(
            f"latency @ {lat.offered_msgs_per_s:,.0f} msg/s offered (ssmd_write_latency_seconds, "
            f"{lat.samples:,.0f} samples, 1 in 16 messages; p50/p99 interpolated in buckets): "
            f"p50 {lat.p50_ms:.2f} ms, p99 {lat.p99_ms:.2f} ms, max {lat.max_ms:.2f} ms, "
            f"mean {lat.mean_ms:.2f} ms; peak RSS {lat.peak_rss_mb:.1f} MB; waited for its "
            f"core {lat.cpu_wait_share:.1%} of the time"
            + ("" if lat.complete else f"; INCOMPLETE: {lat.note}")
        )
    if r.archive:
        coll = r.summaries.get("collector")
        out.append("")
        out.append(render_archive(r.archive, coll.cpu_us_per_msg if coll else None))
    if r.operator:
        o = r.operator
        out.append("")
        out.append(
            f"operator: {o.environments} SsmdEnvironments from cold start against kmock: "
            f"live {o.startup_s:.1f} s, all Deployments {o.deployments_s:.1f} s, all Ready "
            f"{o.ready_s:.1f} s; operator CPU {o.cpu_s:.1f} s, {o.requests:,} API requests "
            f"({o.requests / max(o.environments, 1):.0f}/environment), peak RSS "
            f"{o.peak_rss_mb:.1f} MB; emulator CPU {o.emulator_cpu_s:.1f} s"
            + ("" if o.complete else f"; FAILED: {o.error}")
        )
    elif "operator" in r.skipped:
        out.append(f"\noperator: skipped: {r.skipped['operator']}")
    out.append("")
    if r.ratios:
        out.append(
            "ratios: " + ", ".join(f"{k.replace('_', ' ')} {v:.2f}" for k, v in r.ratios.items())
        )
    for t in r.targets:
        out.append(f"  {t.verdict:<4} {t.name:<38} {t.figure:<42} target {t.goal}")
    return "\n".join(out)


def to_json(r: Results) -> str:
    return json.dumps(asdict(r), indent=2, default=str, allow_nan=True)


def compare(old: dict[str, Any], new: Results) -> str:
    """Medians of a previous ``--json`` file next to this run's (same machine, ideally)."""
    lines = [f"compared with {old.get('meta', {}).get('started', '?')}:"]
    for key, x in new.summaries.items():
        before = old.get("summaries", {}).get(key)
        if not before:
            continue
        rate = x.msgs_per_s / before["msgs_per_s"] if before["msgs_per_s"] else math.nan
        cost = x.cpu_us_per_msg / before["cpu_us_per_msg"] if before["cpu_us_per_msg"] else math.nan
        lines.append(
            f"  {LABELS.get(key, key):<36} msg/s {before['msgs_per_s']:>9,.0f} -> "
            f"{x.msgs_per_s:>9,.0f} ({rate:.2f}x)   CPU us/msg {before['cpu_us_per_msg']:.2f} -> "
            f"{x.cpu_us_per_msg:.2f} ({cost:.2f}x)"
        )
    for k, v in new.ratios.items():
        if k in old.get("ratios", {}):
            lines.append(f"  {k.replace('_', ' '):<36} {old['ratios'][k]:.2f} -> {v:.2f}")
    return "\n".join(lines)
