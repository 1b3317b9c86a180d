"""Typed field access on parsed YAML that records problems instead of raising.

A ``Fields`` wraps one mapping from one file at one path (``versions[1]``). Each
accessor returns the value or ``None`` and, on a mismatch, appends a ``Problem``
naming the file, the full dotted field path, what was expected and what was found.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Iterator, Mapping
from typing import Any

from .errors import Problem, describe

# \Z, not $: "$" also matches before a trailing newline, so "kalshi\n" would pass.
NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\Z")
DATE_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
NAME_EXPECTED = "a lowercase DNS label (a-z, 0-9, '-', at most 63 characters)"


class Fields:
    def __init__(
        self, data: Mapping[str, Any], file: str, problems: list[Problem], path: str = ""
    ) -> None:
        self.data = data
        self.file = file
        self.problems = problems
        self.path = path

    def where(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def problem(self, key: str, expected: str, found: object) -> None:
        self.problems.append(Problem(self.file, self.where(key), expected, describe(found)))

    def text(self, key: str, *, required: bool = True, choices: tuple[str, ...] = ()) -> str | None:
        value = self.data.get(key)
        if value is None and not required:
            return None
        if not isinstance(value, str) or not value.strip():
            self.problem(key, "a non-empty string", value)
            return None
        if choices and value not in choices:
            self.problem(key, "one of " + ", ".join(choices), value)
            return None
        return value

    def name(self, key: str) -> str | None:
        value = self.text(key)
        if value is not None and not NAME_RE.match(value):
            self.problem(key, NAME_EXPECTED, value)
            return None
        return value

    def flag(self, key: str, default: bool) -> bool:
        value = self.data.get(key, default)
        if not isinstance(value, bool):
            self.problem(key, "true or false", value)
            return default
        return value

    def number(self, key: str) -> float | None:
        value = self.data.get(key)
        if value is None:
            return None
        number = math.nan
        if isinstance(value, int | float) and not isinstance(value, bool):
            try:
                number = float(value)
            except OverflowError:  # an int too large for a float
                number = math.inf
        # Written so that NaN fails too; .inf and overflowing ints are not limits either.
        if not 0 < number < math.inf:
            self.problem(key, "a positive number", value)
            return None
        return number

    def date(self, key: str, *, required: bool = True) -> dt.date | None:
        value = self.data.get(key)
        if value is None and not required:
            return None
        # YAML turns an unquoted 2025-12-22 into a date; a quoted one stays a string.
        if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
            return value
        # fromisoformat alone would also take week dates such as 2025-W52-1.
        if isinstance(value, str) and DATE_RE.fullmatch(value):
            try:
                return dt.date.fromisoformat(value)
            except ValueError:  # 2025-02-30 and the like
                pass
        self.problem(key, "a date in the form YYYY-MM-DD", value)
        return None

    def strings(self, key: str, *, required: bool = True) -> tuple[str, ...] | None:
        value = self.data.get(key)
        if value is None and not required:
            return ()
        if not isinstance(value, list) or (required and not value):
            self.problem(key, "a non-empty list of strings", value)
            return None
        bad = [v for v in value if not isinstance(v, str) or not v.strip()]
        if bad:
            self.problem(key, "a list of non-empty strings", bad[0])
            return None
        return tuple(value)

    def mapping(self, key: str, *, required: bool = True) -> Fields | None:
        value = self.data.get(key)
        if value is None and not required:
            return None
        if not isinstance(value, dict):
            self.problem(key, "a mapping", value)
            return None
        return Fields(value, self.file, self.problems, self.where(key))

    def items(self, key: str, *, required: bool = True) -> Iterator[Fields]:
        """Each element of a list of mappings, as ``Fields`` at ``key[i]``."""
        value = self.data.get(key)
        if value is None and not required:
            return
        if not isinstance(value, list) or (required and not value):
            self.problem(key, "a non-empty list", value)
            return
        for i, item in enumerate(value):
            if isinstance(item, dict):
                yield Fields(item, self.file, self.problems, f"{self.where(key)}[{i}]")
            else:
                self.problem(f"{key}[{i}]", "a mapping", item)
