"""Problems found in GitOps metadata, as values a user can act on.

Every problem names the file (relative to the metadata root), the field (a dotted
path such as ``versions[0].effective_from``), what was expected and what was found.
Problems are collected rather than raised one at a time, so that ``ssmd validate``
can list everything wrong with a tree in one run.
"""

from __future__ import annotations

import reprlib
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """One thing wrong with one field of one metadata file."""

    file: str
    field: str
    expected: str
    found: str

    def __str__(self) -> str:
        where = f"{self.file}: {self.field}" if self.field else self.file
        return f"{where}: expected {self.expected}; found {self.found}"


class MetadataInvalid(Exception):
    """Raised when metadata needed for a task has problems; carries all of them."""

    def __init__(self, problems: Iterable[Problem]) -> None:
        self.problems: tuple[Problem, ...] = tuple(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"{len(self.problems)} metadata problem(s):\n{lines}")


class _BriefRepr(reprlib.Repr):
    """``repr`` that stops early, so its cost is bounded whatever the document holds.

    A plain ``repr`` expands YAML aliases (``&a [*b, *b, ...]`` nested a few levels
    is billions of elements) and refuses integers of more than 4300 digits, which
    YAML happily builds from hex.
    """

    def __init__(self) -> None:
        super().__init__()
        self.maxlevel = 3
        self.maxstring = 40
        self.maxother = 60

    def repr_int(self, x: int, level: int) -> str:
        if x.bit_length() > 128:
            return f"<a {x.bit_length()}-bit integer>"
        return super().repr_int(x, level)


_brief = _BriefRepr()


def describe(value: object) -> str:
    """Render a found value briefly for an error message (never whole documents)."""
    if value is None:
        return "nothing (field missing or null)"
    if isinstance(value, str):
        text = repr(value)
        return text if len(text) <= 80 else text[:77] + "..."
    text = _brief.repr(value)
    if len(text) > 80:
        text = text[:77] + "..."
    return f"{type(value).__name__} {text}"
