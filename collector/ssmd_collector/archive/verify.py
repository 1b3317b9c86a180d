"""``ssmd archive verify``: is an archive whole, and which periods can be trusted?

Three checks in one pass over the data, plain and sealed alike:

- **Lines.** Every line is one whole, well-formed ``{"ts","feed","data"}`` object whose
  ``data`` is JSON; a sealed part decompresses and matches its manifest (lines and
  SHA-256). Anything else is *corruption*, named by file and line; it fails the run.
- **Sequences.** Per ``sid``, ``seq`` must go up by one over every frame that carries
  both (data, ``ok``, ``unsubscribed``; never an ``error``), as the collector checks
  them (KALSHI.md section 7). A sid's sequence starts afresh at the ``subscribed``
  answer that announces it, so each connection (each collector run: the collector never
  reconnects by itself) is checked on its own. A jump is a *gap*, named by file, line,
  sid, channel and the numbers missing; whether the collector's events file recorded it
  is said too.
- **Coverage**, from the events file: the sessions (``connected`` to ``disconnected``
  or ``stop``), the disconnected periods between them, recoveries and dead
  subscriptions. Without an events file the data's first and last lines bound one
  session, and the report says so.

Gaps are facts about the feed, not damage to the archive: they are reported, and fail
the run only when asked (``--fail-on-gaps``).
"""

from __future__ import annotations

import hashlib
import itertools
from dataclasses import asdict, dataclass, field
from typing import Any

import msgspec
import zstandard

from .reader import (
    DATA,
    REJECTED,
    TORN,
    Archive,
    Envelope,
    LineError,
    LineReader,
    Progress,
    decode_any,
    decode_envelope,
    feed_head,
    read_events,
    split_line,
    total_size,
    ts_ns,
)


@dataclass
class Gap:
    where: str
    ts: str
    sid: int
    channel: str
    expected: int
    received: int
    recorded: bool
    """The collector's events file has a ``gap`` event for it."""

    @property
    def missing(self) -> int:
        return self.received - self.expected


@dataclass
class Session:
    connected: str | None
    """``ts`` of the ``connected`` event (None without an events file)."""
    first: str | None = None
    last: str | None = None
    """``ts`` of the first and last data line received in the session."""
    lines: int = 0
    ended: str | None = None
    end: str = ""
    """How it ended: the ``disconnected`` reason or the ``stop`` exit, when recorded."""

    @property
    def seconds(self) -> float:
        start = self.connected or self.first
        stop = self.ended or self.last
        if start is None or stop is None:
            return 0.0
        return max(0, ts_ns(stop) - ts_ns(start)) / 1e9


@dataclass
class Period:
    start: str
    end: str

    @property
    def seconds(self) -> float:
        return (ts_ns(self.end) - ts_ns(self.start)) / 1e9


@dataclass
class Report:
    root: str
    feed: str
    files: int = 0
    sealed_files: int = 0
    lines: int = 0
    bytes: int = 0
    corrupt: list[str] = field(default_factory=list)
    gaps: list[Gap] = field(default_factory=list)
    duplicates: int = 0
    sessions: list[Session] = field(default_factory=list)
    disconnected: list[Period] = field(default_factory=list)
    recoveries: list[dict[str, Any]] = field(default_factory=list)
    deaths: list[dict[str, Any]] = field(default_factory=list)
    gaps_recorded_only: list[dict[str, Any]] = field(default_factory=list)
    """``gap`` events of the collector that the data does not show (its lines lost since)."""
    rejected_lines: int = 0
    torn_fragments: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.corrupt

    @property
    def recorded_seconds(self) -> float:
        return sum(s.seconds for s in self.sessions)

    def to_json(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["ok"] = self.ok
        doc["recorded_seconds"] = round(self.recorded_seconds, 6)
        for gap, raw in zip(self.gaps, doc["gaps"], strict=True):
            raw["missing"] = gap.missing
        for period, raw in zip(self.disconnected, doc["disconnected"], strict=True):
            raw["seconds"] = round(period.seconds, 6)
        for session, raw in zip(self.sessions, doc["sessions"], strict=True):
            raw["seconds"] = round(session.seconds, 6)
        return doc


class _Subscribed(msgspec.Struct):
    msg: dict[str, Any] | None = None


_decode_subscribed = msgspec.json.Decoder(_Subscribed).decode


def verify(archive: Archive, *, progress: bool = True, max_listed: int = 1000) -> Report:
    """Check ``archive`` (see the module doc) and return what was found."""
    report = Report(str(archive.root), archive.feed)
    report.corrupt.extend(archive.problems)
    events, event_problems = read_events(archive)
    report.corrupt.extend(event_problems)
    data_files = archive.of(DATA)
    report.files = len(archive.files)
    report.sealed_files = sum(f.sealed for f in archive.files)
    meter = Progress("verify", total_size(data_files), enabled=progress)
    head = feed_head(archive.feed)

    sessions = _sessions(events)
    report.sessions = sessions or [Session(connected=None)]
    if not any(f.kind == "events" for f in archive.files):
        report.notes.append(
            "no events file: sessions, disconnects and recoveries are unknown; "
            "the data's first and last lines bound one session"
        )
    recorded_gaps: dict[tuple[object, object, object], Any] = {
        (e.fields.get("sid"), e.fields.get("expected"), e.fields.get("received")): e
        for e in events
        if e.event == "gap"
    }
    seen_gaps: set[tuple[object, object, object]] = set()
    session_starts = [s.connected or "" for s in sessions]
    current = 0
    last_seq: dict[int, int] = {}
    channel_of: dict[int, str] = {}

    for file in data_files:
        hasher = hashlib.sha256() if file.manifest is not None else None
        reader = LineReader(file, meter, hasher)
        count = 0
        try:
            for number, line in reader:
                count += 1
                where = f"{file.path}:{number}"
                if reader.unterminated:
                    problem = "expected a whole line; it has no newline (cut short)"
                    _corrupt(report, f"{where}: {problem}", max_listed)
                    break
                try:
                    ts, data = split_line(line, head, check_data=False)
                    env = _envelope(data)
                except LineError as exc:
                    _corrupt(report, f"{where}: {exc}", max_listed)
                    continue
                report.lines += 1
                while current + 1 < len(session_starts) and ts >= session_starts[current + 1]:
                    current += 1
                session = report.sessions[current]
                session.lines += 1
                if session.first is None:
                    session.first = ts
                session.last = ts
                if env is None:
                    continue  # valid JSON of another shape: data all the same
                if env.type == "subscribed":
                    body = _decode_subscribed(data).msg or {}
                    sid = body.get("sid")
                    if isinstance(sid, int):
                        last_seq.pop(sid, None)  # a new sid is a new sequence
                        channel_of[sid] = str(body.get("channel", "unknown"))
                    continue
                if env.type == "error" or env.sid is None or env.seq is None:
                    continue
                sid, seq = env.sid, env.seq
                last = last_seq.get(sid)
                if last is None or seq == last + 1:
                    last_seq[sid] = seq
                elif seq > last:
                    last_seq[sid] = seq
                    key = (sid, last + 1, seq)
                    seen_gaps.add(key)
                    report.gaps.append(
                        Gap(where, ts, sid, channel_of.get(sid, "unknown"), last + 1, seq,
                            key in recorded_gaps)
                    )  # fmt: skip
                else:
                    report.duplicates += 1
        except zstandard.ZstdError as exc:
            problem = f"expected a zstd stream; decompression failed after line {count}: {exc}"
            _corrupt(report, f"{file.path}: {problem}", max_listed)
            continue
        report.bytes += reader.plain_bytes
        manifest = file.manifest
        found = hasher.hexdigest() if hasher is not None else ""
        if manifest is not None and (manifest.lines != count or manifest.sha256 != found):
            _corrupt(
                report,
                f"{file.path}: expected {manifest.lines} lines with SHA-256 "
                f"{manifest.sha256[:16]}... (its manifest); found {count} lines with SHA-256 "
                f"{found[:16]}...",
                max_listed,
            )
    for recorded, event in recorded_gaps.items():
        if recorded not in seen_gaps:
            report.gaps_recorded_only.append({"where": event.where, "ts": event.ts, **event.fields})
    report.disconnected = _disconnected(report.sessions)
    report.recoveries = [
        {"ts": e.ts, "event": e.event, **e.fields}
        for e in events
        if e.event in ("recovery_requested", "recovery_completed")
    ]
    report.deaths = [
        {"ts": e.ts, "event": e.event, **e.fields}
        for e in events
        if e.event in ("subscription_died", "subscription_restored")
    ]
    for file in archive.files:
        if file.kind in (REJECTED, TORN):
            lines = sum(1 for _ in LineReader(file))
            if file.kind == REJECTED:
                report.rejected_lines += lines
            else:
                report.torn_fragments += lines // 2
    return report


def _envelope(data: bytes) -> Envelope | None:
    """The routing fields of ``data``; None for valid JSON of another shape. Raises
    :class:`LineError` when ``data`` is not JSON (the decode checks every byte)."""
    try:
        return decode_envelope(data)
    except msgspec.ValidationError:
        try:
            decode_any(data)
        except msgspec.DecodeError as exc:
            raise LineError(f"field data: expected JSON; found {exc}") from None
        return None
    except msgspec.DecodeError as exc:
        raise LineError(f"field data: expected JSON; found {exc}") from None


def _corrupt(report: Report, text: str, max_listed: int) -> None:
    if len(report.corrupt) < max_listed:
        report.corrupt.append(text)
    elif len(report.corrupt) == max_listed:
        report.corrupt.append("... more corrupt lines not listed")


def _sessions(events: list[Any]) -> list[Session]:
    sessions: list[Session] = []
    for event in events:
        if event.event == "connected":
            sessions.append(Session(connected=event.ts))
        elif sessions and sessions[-1].ended is None and event.event in ("disconnected", "stop"):
            last = sessions[-1]
            last.ended = event.ts
            if event.event == "disconnected":
                last.end = f"disconnected: {event.fields.get('reason', '')}"
            else:
                exit_name, reason = event.fields.get("exit", ""), event.fields.get("reason", "")
                last.end = f"stop: {exit_name} {reason}".strip()
    return sessions


def _disconnected(sessions: list[Session]) -> list[Period]:
    periods = []
    for before, after in itertools.pairwise(sessions):
        end = before.ended or before.last
        if end is not None and after.connected is not None and after.connected > end:
            periods.append(Period(end, after.connected))
    return periods


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


def render(report: Report) -> str:
    """The report as a human-readable table."""
    out = [
        f"archive {report.root} feed {report.feed}: {report.files} files "
        f"({report.sealed_files} sealed), {report.lines:,} lines, {report.bytes / 1e6:,.1f} MB",
    ]
    if report.corrupt:
        out.append(f"CORRUPT: {len(report.corrupt)} problem(s)")
        out.extend(f"  {c}" for c in report.corrupt)
    else:
        out.append(f"lines: all {report.lines:,} whole and well-formed")
    out.append(f"sessions: {len(report.sessions)}, recorded {_duration(report.recorded_seconds)}")
    out.append(f"  {'#':>2}  {'from':<27}  {'to':<27}  {'duration':>9}  {'lines':>10}  end")
    for i, s in enumerate(report.sessions, 1):
        start = s.connected or s.first or "-"
        stop = s.ended or s.last or "-"
        out.append(
            f"  {i:>2}  {start:<27}  {stop:<27}  {_duration(s.seconds):>9}  {s.lines:>10,}  {s.end}"
        )
    out.append(f"disconnected periods: {len(report.disconnected)}")
    out.extend(f"  {p.start} -> {p.end} ({_duration(p.seconds)})" for p in report.disconnected)
    out.append(f"sequence gaps: {len(report.gaps)}")
    for g in report.gaps:
        seen = "recorded in events" if g.recorded else "NOT in the events file"
        out.append(
            f"  {g.where}: sid {g.sid} ({g.channel}) expected seq {g.expected}, "
            f"received {g.received} ({g.missing} missing) at {g.ts}; {seen}"
        )
    for e in report.gaps_recorded_only:
        out.append(f"  {e['where']}: the collector recorded a gap the data does not show: {e}")
    out.append(f"duplicates: {report.duplicates}")
    requested = sum(r["event"] == "recovery_requested" for r in report.recoveries)
    completed = sum(r["event"] == "recovery_completed" for r in report.recoveries)
    out.append(f"recoveries: {requested} requested, {completed} completed")
    out.extend(
        f"  {r['ts']} {r['event']} {r.get('channel', '')} sid {r.get('sid')} {r.get('method', '')}"
        for r in report.recoveries
    )
    if report.deaths:
        out.append(f"subscriptions ended by the exchange / restored: {len(report.deaths)}")
        out.extend(
            f"  {d['ts']} {d['event']} {d.get('channel', '')} sid {d.get('sid')} "
            f"code {d.get('code', '')}"
            for d in report.deaths
        )
    if report.rejected_lines or report.torn_fragments:
        out.append(
            f"quarantined by the collector: {report.rejected_lines} rejected frame(s), "
            f"{report.torn_fragments} torn fragment(s)"
        )
    out.extend(f"note: {n}" for n in report.notes)
    out.append("verdict: " + ("OK" if report.ok else "CORRUPT"))
    return "\n".join(out)


def as_json(report: Report) -> str:
    import json

    return json.dumps(report.to_json(), indent=1)


__all__ = ["Gap", "Report", "Session", "as_json", "render", "verify"]
