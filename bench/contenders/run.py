"""Running one contender process against the simulator and turning its report into a Sample."""

from __future__ import annotations

import json
from pathlib import Path

from bench.contenders.window import Report
from bench.expected import Expected
from bench.measure import Sample
from bench.processes import Child, pinned, python_module
from bench.sender import KeyPair
from bench.verify import Layout, verify

REPO = Path(__file__).resolve().parents[2]

MODULES = {
    "sender": "bench.contenders.raw_socket",
    "bare": "bench.contenders.bare_websockets",
    "frames": "bench.contenders.bare_frames",
    "picows": "bench.contenders.bare_picows",
    "naive": "bench.contenders.naive",
}


def run_contender(
    key: str,
    sim_url: str,
    keys: KeyPair,
    markets: int,
    expected: Expected,
    workdir: Path,
    *,
    core: int | None,
    timeout: float,
) -> Sample:
    workdir.mkdir(parents=True, exist_ok=True)
    args = ["--url", sim_url, "--private-key", str(keys.private), "--markets", str(markets)]
    archive = workdir / f"{key}.jsonl"
    if key == "sender":
        args += ["--frames", str(expected.frames), "--wire-bytes", str(expected.wire_bytes)]
    elif key == "naive":
        args += ["--out", str(archive)]
    stdout, stderr = workdir / f"{key}.out", workdir / f"{key}.err"
    with stdout.open("wb") as out, stderr.open("wb") as err:
        argv = pinned(core, python_module(MODULES[key], *args))
        child = Child(argv, stdout=out, stderr=err, cwd=REPO)
    exited = child.wait(timeout)
    try:
        report = Report(**json.loads(stdout.read_text()))
    except (ValueError, TypeError):
        tail = stderr.read_text(errors="replace")[-500:]
        return Sample(key, 0, 0.0, 0.0, exited.peak_rss_mb, False, f"exit {exited.code}: {tail}")
    problems = [report.error] if report.error else []
    if core is not None and report.cpus != [core]:
        problems.append(f"ran on CPUs {report.cpus}, not pinned to {core}")
    if key in ("bare", "frames", "picows") and report.frames != expected.frames:
        problems.append(f"{report.frames} frames, expected {expected.frames}")
    if key == "naive":
        problems += verify([archive], expected, Layout.REENCODED).problems
        archive.unlink(missing_ok=True)
    return Sample(
        key,
        report.window_frames,
        report.window_s,
        report.cpu_s,
        max(report.peak_rss_mb, exited.peak_rss_mb),
        complete=not problems,
        note="; ".join(problems),
        wait_s=report.wait_s,
    )
