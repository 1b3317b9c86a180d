"""The benchmark of issue 5, start to finish: sender, contenders, latency, operator, report.

Layout on the machine: the simulator (and this driver, which only polls) on the
sender core; every contender, one after the other, on the receiver core. Rounds are
interleaved (each round runs every contender once, in a rotating order) so that a
burst of noise from other work on the machine lands on all of them, and medians over
rounds are reported.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import importlib.metadata
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from bench import archive_bench, discovery_bench, tools_bench
from bench.collector_run import CollectorRun, run_collector
from bench.contenders.run import REPO, run_contender
from bench.expected import Expected, replay
from bench.measure import Histogram, Sample, summarize
from bench.operator_bench import reconcile_from_cold
from bench.processes import cores
from bench.report import Latency, Results, compare, evaluate, render, to_json
from bench.sender import KeyPair, Simulator, make_keys
from bench.verify import Layout, verify
from bench.workload import Workload

LATENCY_METRIC = "ssmd_write_latency_seconds"
LATENCY_MAX_METRIC = 'ssmd_write_latency_max_seconds{feed="kalshi-sim"}'


@dataclass(frozen=True)
class Plan:
    messages: int
    rounds: int
    markets: int
    latency_rate: int
    latency_seconds: float
    operator_envs: int
    receiver_core: int | None
    """Where every receiver runs (the collector, the contenders, the operator)."""
    sender_core: int | None
    """Where the simulator, kmock and this driver run."""

    @classmethod
    def of(cls, args: argparse.Namespace) -> Plan:
        """Read the cores before the driver pins itself to the sender core."""
        quick = args.quick
        receiver, sender = cores()
        return cls(
            messages=args.messages or (100_000 if quick or args.tools_only else 300_000),
            rounds=args.rounds or (1 if quick else 3),
            markets=args.markets,
            latency_rate=20_000,
            latency_seconds=3.0 if quick else 8.0,
            operator_envs=args.operator_envs or (50 if quick else 200),
            receiver_core=receiver,
            sender_core=sender,
        )


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bench/run.py", description=__doc__)
    p.add_argument("--quick", action="store_true", help="~30 s: fewer messages, one round")
    p.add_argument("--json", type=Path, help="write the results here")
    p.add_argument("--compare", type=Path, help="a previous --json file to compare with")
    p.add_argument("--messages", type=int, help="data frames per throughput run")
    p.add_argument("--rounds", type=int, help="interleaved rounds of every contender")
    p.add_argument("--markets", type=int, default=100, help="simulated markets (<= 256)")
    p.add_argument("--operator-envs", type=int, help="SsmdEnvironments for the operator run")
    p.add_argument("--skip-operator", action="store_true")
    p.add_argument("--skip-archive", action="store_true")
    p.add_argument(
        "--archive-only", action="store_true", help="only the archive: seal and upload cost"
    )
    p.add_argument("--skip-tools", action="store_true")
    p.add_argument(
        "--tools-only", action="store_true", help="only the archive tools: verify/export MB/s"
    )
    p.add_argument(
        "--discovery-only",
        action="store_true",
        help="only the whole-market start-up: discover and subscribe 10,000 markets, then "
        "their order books flowing (~30 s)",
    )
    p.add_argument("--discovery-markets", type=int, default=10_000, help="open markets to discover")
    p.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    return p.parse_args()


def _git() -> str:
    def run(*argv: str) -> str:
        done = subprocess.run(["git", *argv], cwd=REPO, capture_output=True, text=True)
        return done.stdout.strip()

    dirty = run("status", "--porcelain", "--", "collector", "operator", "pyproject.toml")
    return run("rev-parse", "--short", "HEAD") + (" +uncommitted changes" if dirty else "")


def _cpu_model() -> str:
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "?"


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _load() -> str:
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


@contextlib.contextmanager
def _workdir(keep: bool) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="ssmd-bench-"))
    try:
        yield path
    finally:
        if keep:
            print(f"work directory kept: {path}", file=sys.stderr)
        else:
            shutil.rmtree(path, ignore_errors=True)


def _say(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def throughput(plan: Plan, keys: KeyPair, expected: Expected, work: Path, results: Results) -> None:
    receiver, sender = plan.receiver_core, plan.sender_core
    contenders = ["sender", "bare", "frames", "picows", "naive", "collector"]
    if _version("picows") == "not installed":
        contenders.remove("picows")
        results.skipped["picows"] = "picows is not installed (pip install picows to add it)"
    workload = Workload(plan.messages, plan.markets)
    samples: dict[str, list[Sample]] = {k: [] for k in contenders}
    timeout = 60 + plan.messages / 5_000
    with Simulator(workload, keys, work / "sim.log", core=sender) as sim:
        for rnd in range(plan.rounds):
            order = contenders[rnd % len(contenders) :] + contenders[: rnd % len(contenders)]
            for key in order:
                where = work / f"round{rnd}"
                if key == "collector":
                    sample = _collector_sample(sim.url, keys, plan, expected, where, receiver)
                else:
                    sample = run_contender(
                        key, sim.url, keys, plan.markets, expected, where,
                        core=receiver, timeout=timeout,
                    )  # fmt: skip
                samples[key].append(sample)
                results.samples.append({"round": rnd, **asdict(sample)})
                _say(
                    f"round {rnd + 1}/{plan.rounds} {key:<9} {sample.msgs_per_s:>9,.0f} msg/s "
                    f"{sample.cpu_us_per_msg:6.2f} us/msg {sample.peak_rss_mb:5.1f} MB"
                    + ("" if sample.complete else f" INCOMPLETE: {sample.note}")
                )
    for key, runs in samples.items():
        results.summaries[key] = summarize(key, runs)


def _per_thread(run: CollectorRun) -> dict[str, float]:
    frames = max(run.window_frames, 1)
    return {name: seconds / frames * 1e6 for name, seconds in run.thread_cpu_s.items()}


def _collector_sample(
    url: str, keys: KeyPair, plan: Plan, expected: Expected, work: Path, core: int | None
) -> Sample:
    run = run_collector(url, keys, plan.markets, expected, work / "collector", core=core)
    sample = _as_sample("collector", run, expected)
    shutil.rmtree(work / "collector" / "archive", ignore_errors=True)
    return sample


def _as_sample(name: str, run: CollectorRun, expected: Expected, *extra_problems: str) -> Sample:
    """A collector run as a Sample: complete only if the archive verifies."""
    problems = [run.error] if run.error else []
    problems += verify(run.archive, expected, Layout.SPLICED).problems
    problems += extra_problems
    return Sample(
        name,
        run.window_frames,
        run.window_s,
        run.cpu_s,
        run.exit.peak_rss_mb,
        complete=not problems,
        note="; ".join(problems),
        wait_s=run.wait_s,
        thread_us_per_msg=_per_thread(run),
    )


def latency(plan: Plan, keys: KeyPair, work: Path, results: Results) -> None:
    receiver, sender = plan.receiver_core, plan.sender_core
    rate = plan.latency_rate
    workload = Workload(int(rate * plan.latency_seconds), plan.markets)
    expected = replay(workload)
    with Simulator(workload, keys, work / "sim-latency.log", rate=rate, core=sender) as sim:
        run = run_collector(
            sim.url, keys, plan.markets, expected, work / "latency",
            core=receiver, scrape_at_line=expected.frames - rate // 2,
        )  # fmt: skip
    no_scrape = () if run.metrics else ("no /metrics scrape before the stream ended",)
    sample = _as_sample("collector@20k", run, expected, *no_scrape)
    results.samples.append({"round": 0, **asdict(sample)})
    results.summaries["collector@20k"] = summarize("collector@20k", [sample])
    hist = Histogram.from_metrics(run.metrics, LATENCY_METRIC)
    results.latency = Latency(
        offered_msgs_per_s=rate,
        samples=hist.count,
        p50_ms=hist.quantile(0.5) * 1e3,
        p99_ms=hist.quantile(0.99) * 1e3,
        max_ms=run.metrics.get(LATENCY_MAX_METRIC, float("nan")) * 1e3,
        mean_ms=hist.total / hist.count * 1e3 if hist.count else float("nan"),
        share_within_5ms=hist.fraction_at_most(0.005),
        peak_rss_mb=run.exit.peak_rss_mb,
        complete=sample.complete,
        note=sample.note,
        cpu_wait_share=run.wait_s / run.window_s if run.window_s else 0.0,
    )
    _say(
        f"latency @ {rate:,} msg/s: p50 {results.latency.p50_ms:.2f} ms, "
        f"p99 {results.latency.p99_ms:.2f} ms, max {results.latency.max_ms:.2f} ms"
    )


def archive(plan: Plan, work: Path, results: Results) -> None:
    _say(f"archive: sealing and uploading a day file of {plan.messages:,} messages")
    results.archive = archive_bench.measure_archive(
        Workload(plan.messages, plan.markets), work / "archive", plan.receiver_core,
        plan.sender_core,
    )  # fmt: skip


def tools(plan: Plan, work: Path, results: Results) -> list[tools_bench.ToolRun]:
    _say(f"archive tools: verify and export a day file of {plan.messages:,} messages")
    runs = tools_bench.measure_tools(
        Workload(plan.messages, plan.markets), work / "tools", plan.receiver_core
    )
    results.meta["tools"] = [asdict(r) | {"mb_per_s": round(r.mb_per_s, 1)} for r in runs]
    return runs


def main() -> None:
    args = parse_args()
    plan = Plan.of(args)
    receiver, sender = plan.receiver_core, plan.sender_core
    if sender is not None:
        os.sched_setaffinity(0, {sender})  # the driver only polls: keep it off the receiver
    else:
        _say("fewer than 2 CPUs: nothing is pinned, figures are indicative only")
    started = time.monotonic()
    results = Results(
        meta={
            "started": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "quick": args.quick,
            "git": _git(),
            "cpu": _cpu_model(),
            "cores": os.cpu_count(),
            "python": platform.python_version(),
            "websockets": _version("websockets"),
            "picows": _version("picows"),
            "load_before": _load(),
            **asdict(plan),
        }
    )
    with _workdir(args.keep) as work:
        if args.tools_only:
            print(tools_bench.render(tools(plan, work, results)))
            return
        keys = make_keys(work)
        if args.discovery_only:
            _say(f"discovery: {args.discovery_markets:,} markets discovered and subscribed")
            found = discovery_bench.measure_discovery(
                keys, work / "discovery", markets=args.discovery_markets,
                receiver=receiver, sender=sender,
            )  # fmt: skip
            print(discovery_bench.render(found))
            if args.json:
                args.json.write_text(json.dumps(asdict(found), indent=2) + "\n")
            return
        _say(f"replaying the simulator's stream of {plan.messages:,} frames")
        expected = replay(Workload(plan.messages, plan.markets))
        results.meta["frame_bytes"] = expected.data_bytes
        results.meta["mix"] = ", ".join(
            f"{k} {v / expected.data:.0%}"
            for k, v in sorted(expected.per_type.items(), key=lambda kv: -kv[1])
            if k != "subscribed"
        )
        if args.archive_only:
            archive(plan, work, results)
            print(archive_bench.render(results.archive, None))  # type: ignore[arg-type]
            return
        throughput(plan, keys, expected, work, results)
        latency(plan, keys, work, results)
        if args.skip_archive:
            results.skipped["archive"] = "--skip-archive"
        else:
            archive(plan, work, results)
        tool_runs = None if args.skip_tools else tools(plan, work, results)
        if args.skip_operator:
            results.skipped["operator"] = "--skip-operator"
        else:
            _say(f"operator: {plan.operator_envs} SsmdEnvironments from cold start")
            results.operator = reconcile_from_cold(plan.operator_envs, receiver, work / "operator")
    results.meta["load_after"] = _load()
    results.meta["seconds"] = round(time.monotonic() - started, 1)
    evaluate(results)
    print(render(results))
    if tool_runs is not None:
        print(tools_bench.render(tool_runs))
    print(f"(benchmark took {results.meta['seconds']:.0f} s)")
    if args.compare:
        print()
        print(compare(json.loads(args.compare.read_text()), results))
    if args.json:
        args.json.write_text(to_json(results) + "\n")
        _say(f"results written to {args.json}")
