"""Problems found in GitOps metadata, as values a user can act on.

Every problem names the file (relative to the metadata root), the field (a dotted
path such as ``versions[0].effective_from``), what was expected and what was found.
Problems are collected rather than raised one at a time, so that ``ssmd validate``
can list everything wrong with a tree in one run.
"""

from __future__ import annotations

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


def describe(value: object) -> str:
    """Render a found value briefly for an error message (never whole documents)."""
    if value is None:
        return "nothing (field missing or null)"
    text = repr(value)
    if isinstance(value, str):
        return text if len(text) <= 80 else text[:77] + "..."
    if len(text) > 80:
        text = text[:77] + "..."
    return f"{type(value).__name__} {text}"
