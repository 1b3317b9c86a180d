"""Does a live object already match a desired merge patch? Decides whether to write at all.

The comparison follows JSON merge patch semantics, which is how the operator
writes: every field in the desired manifest must be present with an equal value;
``None`` means the field must be absent; lists must match element by element.
Fields the API server adds (defaults, status, bookkeeping) and fields other
controllers own are ignored, so a converged object compares equal and the
operator makes no write; a hand edit to a field the operator sets does not.
Resource quantities compare by value (the server turns ``0.5`` into ``500m``), after
the rounding the API server applies to container requests and limits (up to a whole
milli-unit: ``0.0005`` CPU is stored as ``1m``); an empty map or list equals an absent
one (the server omits them).

``changed`` tells whether a write changed the server's object at all: a mutating
webhook that appends to a list the operator writes whole (a sidecar, an env var)
makes the comparison fail on every pass and the patch a no-op, which must not be
reported as an update each time.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from decimal import ROUND_CEILING, Decimal, InvalidOperation
from typing import Any

_QUANTITY = re.compile(
    r"^([+-]?[0-9.]+(?:[eE][+-]?[0-9]+)?)(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E)?$"
)
_SUFFIX = {
    "": Decimal(1),
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "k": Decimal("1e3"),
    "M": Decimal("1e6"),
    "G": Decimal("1e9"),
    "T": Decimal("1e12"),
    "P": Decimal("1e15"),
    "E": Decimal("1e18"),
    **{s: Decimal(1024) ** (i + 1) for i, s in enumerate(("Ki", "Mi", "Gi", "Ti", "Pi", "Ei"))},
}
_QUANTITY_KEYS = frozenset({"requests", "limits"})
_QUANTITY_FIELDS = frozenset({"sizeLimit"})


def parse_quantity(text: str) -> Decimal | None:
    """A Kubernetes quantity's value (``"500m"`` -> 0.5), or ``None`` if it is not one."""
    match = _QUANTITY.match(text.strip())
    if match is None:
        return None
    try:
        return Decimal(match.group(1)) * _SUFFIX[match.group(2) or ""]
    except InvalidOperation:
        return None


def canonical_resource(value: Decimal) -> Decimal:
    """A container request or limit as the API server stores it: rounded up to milli-units.

    Kubernetes' ``SetDefaults_ResourceList`` calls ``RoundUp(-3)`` on every value of
    ``resources.requests`` and ``resources.limits``.
    """
    return value.quantize(Decimal("0.001"), rounding=ROUND_CEILING)


# How the values under a key compare: as written, as a quantity, or as a container
# resource quantity (rounded like the API server does).
_PLAIN, _QUANTITY_VALUE, _RESOURCE_VALUE = 0, 1, 2


def matches(desired: Any, actual: Any, *, quantity: int = _PLAIN) -> bool:
    """True if writing ``desired`` as a merge patch onto ``actual`` would change nothing."""
    if isinstance(desired, Mapping):
        if not isinstance(actual, Mapping):
            return False
        for key, want in desired.items():
            if want is None:
                if actual.get(key) is not None:
                    return False
                continue
            if actual.get(key) is None:
                # The API server drops empty maps and lists (omitempty): absent is equal.
                if isinstance(want, Mapping | list) and not want:
                    continue
                return False
            if not matches(want, actual[key], quantity=_quantity_mode(key, want, quantity)):
                return False
        return True
    if isinstance(desired, Sequence) and not isinstance(desired, str):
        if not isinstance(actual, Sequence) or isinstance(actual, str):
            return False
        return len(desired) == len(actual) and all(
            matches(w, a) for w, a in zip(desired, actual, strict=True)
        )
    if quantity and isinstance(desired, str | int) and isinstance(actual, str | int):
        want, have = parse_quantity(str(desired)), parse_quantity(str(actual))
        if want is not None and have is not None:
            if quantity == _RESOURCE_VALUE:
                want = canonical_resource(want)
            return want == have
    return bool(desired == actual and type(desired) is type(actual))


def _quantity_mode(key: str, value: Any, inherited: int) -> int:
    # Values inside resources.requests/limits are rounded container resources;
    # emptyDir.sizeLimit is a quantity the server keeps as written.
    if key in _QUANTITY_FIELDS:
        return _QUANTITY_VALUE
    if key in _QUANTITY_KEYS and isinstance(value, Mapping):
        return _RESOURCE_VALUE
    return inherited


_BOOKKEEPING = frozenset({"resourceVersion", "managedFields"})


def changed(before: Mapping[str, Any], after: Mapping[str, Any]) -> bool:
    """Did a write change the object, other than its status and bookkeeping?"""

    def content(obj: Mapping[str, Any]) -> dict[str, Any]:
        meta = {k: v for k, v in (obj.get("metadata") or {}).items() if k not in _BOOKKEEPING}
        return {**{k: v for k, v in obj.items() if k != "status"}, "metadata": meta}

    return content(before) != content(after)
