"""Helpers for the fault tests: a real ``ssmd-connector`` process, its outputs, its archive.

The collector runs as a child process while the simulator runs in the test's event
loop, so the tests can both hurt the process (signals, resource limits, missing
privileges) and see exactly what the exchange sent.

Resource limits and dropped capabilities are applied by a tiny Python launcher that
then ``exec``s the collector, rather than by ``preexec_fn``: the effect on the child is
the same, and it stays safe in a parent that has threads (pytest, asyncio's executor).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from collector_harness import LINE
from deadlines import deadline

BIN = Path(sys.executable).parent
CONNECTOR = BIN / "ssmd-connector"
FEED = "kalshi-sim"

# argv: fsize_limit (-1: unchanged), drop_dac (0/1), program, args...
# prctl(PR_CAPBSET_DROP=24, cap): CAP_DAC_OVERRIDE=1, CAP_DAC_READ_SEARCH=2. A root
# process execs with the bounding set as its capabilities, so the collector runs as
# uid 0 but without the capability that lets root ignore file modes: a 0o555
# directory then refuses it with EACCES, exactly as it refuses a non-root pod user.
_LAUNCHER = """
import ctypes, os, resource, sys
fsize, drop_dac = int(sys.argv[1]), sys.argv[2] == "1"
if fsize >= 0:
    resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
if drop_dac:
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (1, 2):
        if libc.prctl(24, cap, 0, 0, 0) != 0:
            sys.exit("prctl(PR_CAPBSET_DROP) failed: errno %d" % ctypes.get_errno())
os.execv(sys.argv[3], sys.argv[3:])
"""


@dataclass
class Collector:
    """A running (or finished) ``ssmd-connector`` child with its outputs in files."""

    proc: asyncio.subprocess.Process
    stdout_path: Path
    stderr_path: Path

    async def wait(self, timeout: float) -> int:
        """Exit code, killing the child (and failing) if it runs past ``deadline(timeout)``."""
        timeout = deadline(timeout)
        try:
            return await asyncio.wait_for(self.proc.wait(), timeout)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            await self.proc.wait()
            raise AssertionError(
                f"collector still running after {timeout}s; stderr tail:\n{self.stderr[-3000:]}"
            ) from None

    @property
    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


async def spawn(
    tree: Path,
    logs: Path,
    *args: str,
    env: dict[str, str] | None = None,
    fsize: int | None = None,
    drop_dac: bool = False,
    program: Sequence[str] = (str(CONNECTOR),),
) -> Collector:
    """Start ``ssmd-connector --env test --config-dir <tree> --port 0 --log-format json``.

    ``logs`` is a fresh path prefix for the child's stdout/stderr files (kept out of
    pipes so a chatty child can never block on a full pipe). ``env`` is added to a
    copy of this process's environment without any ``KALSHI_*`` or ``SSMD_*`` variable,
    in front of it.
    ``args`` come after the defaults, so they override them (the last option wins).
    ``program`` replaces the console script (e.g. ``python -c`` with a fault injected).
    """
    extra = {"PYTHONUNBUFFERED": "1", **(env or {})}
    # The test's variables first: a dump of the environment cut after a few entries
    # (rich tracebacks show ten) must still show them, so that a leak is caught.
    environ = dict(extra)
    for k, v in os.environ.items():
        if not k.startswith(("KALSHI_", "SSMD_")) and k not in extra:
            environ[k] = v
    argv = [
        *program,
        "--env",
        "test",
        "--config-dir",
        str(tree),
        "--port",
        "0",
        "--http-host",
        "127.0.0.1",
        "--log-format",
        "json",
        *args,
    ]
    if fsize is not None or drop_dac:
        launcher = ["-c", _LAUNCHER, str(-1 if fsize is None else fsize), str(int(drop_dac))]
        argv = [sys.executable, *launcher, *argv]
    logs.parent.mkdir(parents=True, exist_ok=True)
    out_path, err_path = logs.with_suffix(".stdout"), logs.with_suffix(".stderr")
    with out_path.open("wb") as out, err_path.open("wb") as err:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=err, env=environ
        )
    return Collector(proc, out_path, err_path)


def retarget(tree: Path, old_url: str, new_url: str) -> None:
    """Point a ``make_tree`` tree's simulator feed from ``old_url`` to ``new_url``
    (each run gets a simulator of its own, on a new port)."""
    feed = tree / "feeds" / f"{FEED}.yaml"
    text = feed.read_text()
    assert old_url in text, f"{feed} does not point at {old_url}"
    feed.write_text(text.replace(old_url, new_url))


def json_logs(stderr: str) -> list[dict[str, object]]:
    """The child's ``--log-format json`` lines (anything else, e.g. a traceback, skipped)."""
    out = []
    for line in stderr.splitlines():
        with contextlib.suppress(ValueError):
            entry = json.loads(line)
            if isinstance(entry, dict) and "msg" in entry:
                out.append(entry)
    return out


def day_files(data_dir: Path, suffix: str = ".jsonl") -> list[Path]:
    """The feed's day files, oldest day first."""
    return sorted(data_dir.glob(f"*/{FEED}{suffix}"))


def archive_size(data_dir: Path) -> int:
    return sum(f.stat().st_size for f in day_files(data_dir))


def archived(data_dir: Path) -> list[str]:
    """The raw ``data`` of every archive line, in order; fails on any line that is not whole.

    Every file must end with a newline and every line must be a complete archive line
    (the line regex plus the ``data`` part as JSON the exchange sent), so a torn or
    glued line anywhere fails the calling test.
    """
    out: list[str] = []
    for f in day_files(data_dir):
        content = f.read_bytes()
        assert not content or content.endswith(b"\n"), f"{f} ends in a torn line"
        for n, line in enumerate(content.decode("utf-8").splitlines(), 1):
            m = LINE.match(line)
            assert m, f"{f}:{n}: not a whole archive line: {line[:160]!r}"
            out.append(m.group(3))
    return out


def split_into_prefixes(lines: Sequence[str], sent: Sequence[Sequence[str]]) -> list[int]:
    """How many lines of each run the archive holds, asserting it is exactly
    ``sent[0][:k0] + sent[1][:k1] + ...`` (each run a prefix of what its session sent,
    runs in order, nothing from any run lost in the middle, duplicated or reordered)."""
    counts: list[int] = []
    i = 0
    for run, frames in enumerate(sent):
        k = 0
        while i < len(lines) and k < len(frames) and lines[i] == frames[k]:
            i += 1
            k += 1
        counts.append(k)
        assert k > 0, f"run {run}: none of its frames in the archive at line {i}"
    assert i == len(lines), f"archive line {i} belongs to no run: {lines[i][:160]!r}"
    return counts


def leaks(text: str, secrets: Iterable[str]) -> list[str]:
    """The secrets (or a 16-character piece of one) that occur in ``text``."""
    found = []
    for secret in secrets:
        pieces = {secret[i : i + 16] for i in range(0, max(1, len(secret) - 15), 8)}
        if secret in text or any(p in text for p in pieces):
            found.append(secret)
    return found


def pem_body_lines(pem: bytes) -> list[str]:
    """The base64 lines of a PEM (its secret part), without BEGIN/END."""
    return [line for line in pem.decode().splitlines() if line and not line.startswith("-----")]
