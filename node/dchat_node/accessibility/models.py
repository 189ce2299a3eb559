"""Pydantic models of the accessibility API (request bodies and responses; they generate
its part of ``/openapi.json``). Every bound is here: garbage is a 422 naming the field."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Self

from pydantic import ConfigDict, Field, StringConstraints, model_validator

from dchat_node.accessibility.contrast import HEX_COLOUR, Level, Role, parse_hex
from dchat_node.accessibility.shortcuts import (
    MAX_SHORTCUT_CHARS,
    Platform,
    ShortcutError,
    parse,
)
from dchat_node.api.models import RequestModel, ResponseModel

MAX_COLOURS = 256
MAX_PAIRS = 1024
MAX_SHORTCUTS = 512
NAME_PATTERN = r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$"
FONT_SCALE_MIN = 0.5
FONT_SCALE_MAX = 4.0  # WCAG 1.4.10 Reflow is tested at 400 % zoom

Token = Annotated[str, StringConstraints(pattern=NAME_PATTERN)]
HexColour = Annotated[str, StringConstraints(pattern=HEX_COLOUR.pattern)]
ColourRef = Annotated[
    str,
    StringConstraints(pattern=rf"{NAME_PATTERN}|{HEX_COLOUR.pattern}"),
]
Label = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=r"^[^\x00]*$")]


# -- contrast --------------------------------------------------------------------------


class ColourPair(RequestModel):
    foreground: ColourRef = Field(description="A colour token of the theme, or a hex colour.")
    background: ColourRef = Field(
        description="A colour token of the theme, or a hex colour; must be opaque."
    )
    role: Role = Field(
        description="text (normal text), large-text (18pt, or 14pt bold, and larger) or ui "
        "(UI components and graphical objects, SC 1.4.11)."
    )
    name: Label | None = Field(None, description="A label for the report (e.g. a component).")


class Theme(RequestModel):
    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        json_schema_extra={
            "examples": [
                {
                    "colors": {"surface": "#ffffff", "muted": "#777777", "focus": "#1a73e8"},
                    "pairs": [
                        {"foreground": "muted", "background": "surface", "role": "text"},
                        {"foreground": "focus", "background": "surface", "role": "ui"},
                        {"foreground": "#00000099", "background": "surface", "role": "text"},
                    ],
                }
            ]
        },
    )
    colors: dict[Token, HexColour] = Field(
        default_factory=dict,
        max_length=MAX_COLOURS,
        description="Named colour tokens: #rgb, #rgba, #rrggbb or #rrggbbaa. A translucent "
        "foreground is composited over its pair's background.",
    )
    pairs: list[ColourPair] = Field(min_length=1, max_length=MAX_PAIRS)

    def resolve(self, ref: str) -> str:
        return ref if ref.startswith("#") else self.colors[ref]

    @model_validator(mode="after")
    def _references(self) -> Self:
        for i, pair in enumerate(self.pairs):
            for side in ("foreground", "background"):
                ref = getattr(pair, side)
                if not ref.startswith("#") and ref not in self.colors:
                    raise ValueError(f"pairs[{i}].{side}: {ref!r} is not a colour of the theme")
            if not parse_hex(self.resolve(pair.background)).opaque:
                raise ValueError(
                    f"pairs[{i}].background: a background must be opaque (no alpha below ff): "
                    "what shows through it is unknown"
                )
        return self


class PairResult(ResponseModel):
    index: int = Field(description="The pair's position in the request.")
    name: str | None
    foreground: str
    background: str
    role: Role
    ratio: float = Field(description="Contrast ratio, unrounded (ratio:1).")
    threshold: float
    criterion: str = Field(description="The WCAG 2.2 success criterion applied.")


class ContrastReport(ResponseModel):
    level: Level = Field(description="AAA when accessibility.wcag_strict_mode is on, else AA.")
    passed: bool
    checked: int
    failures: list[PairResult]
    passes: list[PairResult]


# -- shortcuts -------------------------------------------------------------------------


class Shortcut(RequestModel):
    action: Label
    keys: str = Field(
        min_length=1,
        max_length=MAX_SHORTCUT_CHARS,
        description="Modifiers and a key joined by +, e.g. Mod+Shift+K (Mod: Cmd on macOS, "
        "Ctrl elsewhere), Ctrl+Enter, ?.",
    )
    context: Label = Field("global", description="Duplicates are checked within a context.")
    can_disable: bool = Field(False, description="The user can turn this shortcut off.")
    remappable: bool = Field(False, description="The user can remap it to other keys.")
    focus_only: bool = Field(
        False, description="Active only while its user interface component has focus."
    )


class Keymap(RequestModel):
    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        json_schema_extra={
            "examples": [
                {
                    "shortcuts": [
                        {"action": "search", "keys": "Mod+K", "remappable": True},
                        {"action": "next-message", "keys": "j"},
                        {"action": "send", "keys": "Ctrl+Enter", "context": "composer"},
                    ],
                    "platforms": ["windows", "mac", "linux"],
                }
            ]
        },
    )
    shortcuts: list[Shortcut] = Field(min_length=1, max_length=MAX_SHORTCUTS)
    platforms: list[Platform] = Field(
        default_factory=lambda: list(Platform),
        min_length=1,
        max_length=len(Platform),
        description="Platforms to check on (default all).",
    )

    @model_validator(mode="after")
    def _parses(self) -> Self:
        if len(set(self.platforms)) != len(self.platforms):
            raise ValueError("platforms: each platform at most once")
        for i, s in enumerate(self.shortcuts):
            try:
                parse(s.keys, Platform.windows)
            except ShortcutError as exc:
                raise ValueError(f"shortcuts[{i}].keys: {exc}") from None
        return self


class ShortcutProblem(ResponseModel):
    kind: str = Field(description="duplicate, reserved or character_key.")
    platform: Platform
    shortcut: str = Field(description="The normalised chord (Ctrl+Alt+Shift+Meta+Key).")
    entries: list[int] = Field(description="Positions of the shortcuts involved.")
    actions: list[str]
    message: str
    criterion: str | None = None
    reserved_by: str | None = Field(None, description="browser, os or assistive technology.")


class ShortcutReport(ResponseModel):
    conflict_check: bool = Field(
        description="accessibility.keyboard_shortcut_conflict_check: when off, shortcuts are "
        "only parsed and normalised, no conflict is looked for."
    )
    passed: bool
    checked: int
    problems: list[ShortcutProblem]


# -- preferences -----------------------------------------------------------------------


class PreferencesIn(RequestModel):
    """The whole preference document (PUT replaces it; omitted fields take defaults)."""

    font_scale: float = Field(
        1.0,
        ge=FONT_SCALE_MIN,
        le=FONT_SCALE_MAX,
        allow_inf_nan=False,
        description="Text size multiplier.",
    )
    high_contrast: bool = False
    reduced_motion: bool = False
    screen_reader_hints: bool = Field(
        False, description="Verbose labels and live-region announcements."
    )


class Preferences(PreferencesIn):
    model_config = ConfigDict(extra="forbid", frozen=True)
    updated_at: datetime | None = Field(None, description="None until the user saved some.")
