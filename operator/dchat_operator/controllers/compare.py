"""Does a live object already hold everything the operator wants? (No I/O.)

Design: ``covers(desired, live)`` is a semantic subset test: every field the operator sets must
be present in the live object with an equal value; fields the apiserver or other controllers
add are ignored. Equality understands what the apiserver normalises: quantities ("1000m" ==
"1"), numbers, and empty values the apiserver drops (``false``, ``0``, ``{}``, ``[]``). Lists
must match element by element, so a removed or added element of ours is a difference.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Any

_QUANTITY = re.compile(r"^([+-]?[0-9.]+(?:[eE][+-]?[0-9]+)?)([a-zA-Z]*)$")
_SUFFIX = {
    "": Decimal(1),
    "m": Decimal("0.001"),
    "k": Decimal(10) ** 3,
    "M": Decimal(10) ** 6,
    "G": Decimal(10) ** 9,
    "T": Decimal(10) ** 12,
    "P": Decimal(10) ** 15,
    "E": Decimal(10) ** 18,
    "Ki": Decimal(2) ** 10,
    "Mi": Decimal(2) ** 20,
    "Gi": Decimal(2) ** 30,
    "Ti": Decimal(2) ** 40,
    "Pi": Decimal(2) ** 50,
    "Ei": Decimal(2) ** 60,
}


def quantity(text: str) -> Decimal | None:
    """A Kubernetes quantity as a number, or None if ``text`` is not one."""
    match = _QUANTITY.match(text.strip())
    if not match or match.group(2) not in _SUFFIX:
        return None
    try:
        return Decimal(match.group(1)) * _SUFFIX[match.group(2)]
    except InvalidOperation:
        return None


def _same_scalar(want: Any, have: Any) -> bool:
    if want == have and type(want) is type(have):
        return True
    if isinstance(want, bool) or isinstance(have, bool):
        return want is have
    if isinstance(want, int | float) and isinstance(have, int | float):
        return float(want) == float(have)
    if isinstance(want, str) and isinstance(have, str):
        if want == have:
            return True
        a, b = quantity(want), quantity(have)
        return a is not None and a == b
    return False


def covers(desired: Any, live: Any) -> bool:
    """True when ``live`` already holds every value of ``desired``."""
    if isinstance(desired, dict):
        if not isinstance(live, dict):
            return False
        for key, want in desired.items():
            if key not in live:
                if want in (None, False, 0, "", {}, []):
                    continue
                return False
            if not covers(want, live[key]):
                return False
        return True
    if isinstance(desired, list):
        if not isinstance(live, list) or len(desired) != len(live):
            return False
        return all(covers(a, b) for a, b in zip(desired, live, strict=True))
    return _same_scalar(desired, live)


def differences(desired: Any, live: Any, where: str = "") -> list[str]:
    """Paths where ``covers`` fails (for logs and events)."""
    if isinstance(desired, dict) and isinstance(live, dict):
        out: list[str] = []
        for key, want in desired.items():
            if key not in live:
                if want not in (None, False, 0, "", {}, []):
                    out.append(f"{where}.{key} (missing)")
                continue
            out += differences(want, live[key], f"{where}.{key}")
        return out
    if isinstance(desired, list) and isinstance(live, list) and len(desired) == len(live):
        out = []
        for i, (a, b) in enumerate(zip(desired, live, strict=True)):
            out += differences(a, b, f"{where}[{i}]")
        return out
    return [] if covers(desired, live) else [where or "."]
