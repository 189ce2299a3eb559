"""WCAG 2.2 contrast: colour parsing, relative luminance, contrast ratio, thresholds.

Pure functions (no I/O), used by the accessibility service and tested against known WCAG
values.

Design:
- Relative luminance is WCAG 2.2's definition: each sRGB channel ``c`` (0..1) linearised as
  ``c / 12.92`` when ``c <= 0.04045`` and ``((c + 0.055) / 1.055) ** 2.4`` otherwise (the
  0.04045 cutoff of the sRGB standard, which WCAG 2.2 uses instead of 2.0's 0.03928), then
  ``L = 0.2126 R + 0.7152 G + 0.0722 B``.
- Contrast ratio ``(L1 + 0.05) / (L2 + 0.05)`` with ``L1`` the lighter; it is compared with
  the threshold UNROUNDED (WCAG: "do not round"): #777777 on white is 4.478...:1 and fails
  4.5:1 even though it displays as 4.5 at one decimal.
- Colours are CSS hex: ``#rgb``, ``#rgba``, ``#rrggbb``, ``#rrggbbaa`` (case-insensitive).
  A translucent foreground is composited over its pair's background the way browsers paint
  it (source-over in gamma-encoded sRGB: ``a * fg + (1 - a) * bg`` per channel, kept as
  fractions, not rounded to 8 bits), and the ratio is computed on the result. A background
  must be opaque: what shows through it is unknown, so its contrast cannot be stated
  (the API answers 422 for a translucent background).
- Thresholds by role and level: text (SC 1.4.3 AA 4.5, SC 1.4.6 AAA 7), large text (AA 3,
  AAA 4.5), UI components and graphical objects (SC 1.4.11, 3 at either level: 1.4.11 is an
  AA criterion with no AAA counterpart).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

SRGB_CUTOFF = 0.04045
HEX_COLOUR = re.compile(r"^#(?:[0-9a-fA-F]{3,4}|[0-9a-fA-F]{6}|[0-9a-fA-F]{8})$")


class Role(StrEnum):
    text = "text"
    large_text = "large-text"
    ui = "ui"


class Level(StrEnum):
    AA = "AA"
    AAA = "AAA"


# (threshold, success criterion) by level and role
THRESHOLDS: dict[Level, dict[Role, tuple[float, str]]] = {
    Level.AA: {
        Role.text: (4.5, "1.4.3 Contrast (Minimum)"),
        Role.large_text: (3.0, "1.4.3 Contrast (Minimum)"),
        Role.ui: (3.0, "1.4.11 Non-text Contrast"),
    },
    Level.AAA: {
        Role.text: (7.0, "1.4.6 Contrast (Enhanced)"),
        Role.large_text: (4.5, "1.4.6 Contrast (Enhanced)"),
        Role.ui: (3.0, "1.4.11 Non-text Contrast"),
    },
}


@dataclass(frozen=True, slots=True)
class Rgba:
    """sRGB channels as fractions 0..1 (gamma-encoded, as written in CSS), alpha 0..1."""

    r: float
    g: float
    b: float
    a: float = 1.0

    @property
    def opaque(self) -> bool:
        return self.a >= 1.0


def parse_hex(text: str) -> Rgba:
    """``#rgb``, ``#rgba``, ``#rrggbb`` or ``#rrggbbaa`` -> ``Rgba``; ValueError otherwise."""
    if not HEX_COLOUR.match(text):
        raise ValueError(f"{text!r} is not a hex colour (#rgb, #rgba, #rrggbb or #rrggbbaa)")
    digits = text[1:]
    if len(digits) in (3, 4):
        digits = "".join(d * 2 for d in digits)
    values = [int(digits[i : i + 2], 16) / 255 for i in range(0, len(digits), 2)]
    return Rgba(*values)


def composite(fg: Rgba, bg: Rgba) -> Rgba:
    """``fg`` painted over the opaque ``bg`` (source-over, in sRGB as browsers blend)."""
    if not bg.opaque:
        raise ValueError("the background must be opaque")
    a = fg.a
    return Rgba(
        a * fg.r + (1 - a) * bg.r,
        a * fg.g + (1 - a) * bg.g,
        a * fg.b + (1 - a) * bg.b,
    )


def linearise(channel: float) -> float:
    """One gamma-encoded sRGB channel (0..1) -> linear light, WCAG 2.2 / sRGB cutoff."""
    if channel <= SRGB_CUTOFF:
        return channel / 12.92
    return float(((channel + 0.055) / 1.055) ** 2.4)


def relative_luminance(colour: Rgba) -> float:
    # weights as integers over 10000: white sums to exactly 1.0
    return (
        2126 * linearise(colour.r) + 7152 * linearise(colour.g) + 722 * linearise(colour.b)
    ) / 10000


def contrast_ratio(fg: Rgba, bg: Rgba) -> float:
    """The WCAG contrast ratio of ``fg`` over the opaque ``bg`` (1.0 .. 21.0), unrounded."""
    if not bg.opaque:
        raise ValueError("the background must be opaque")
    top = composite(fg, bg) if not fg.opaque else fg
    l1 = relative_luminance(top)
    l2 = relative_luminance(bg)
    lighter, darker = max(l1, l2), min(l1, l2)
    return (lighter + 0.05) / (darker + 0.05)


def threshold(level: Level, role: Role) -> tuple[float, str]:
    return THRESHOLDS[level][role]
