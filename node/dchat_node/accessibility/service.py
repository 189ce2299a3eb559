"""Accessibility service: contrast and keyboard shortcut validation, user preferences.

Rules live here; the blueprint (``api.py``) only validates input (``models.py``) and
renders results. The level comes from ``accessibility.wcag_strict_mode`` (AAA when on, AA
otherwise); the shortcut checks run when ``accessibility.keyboard_shortcut_conflict_check``
is on. Every validation that finds failures adds their number (failing colour pairs,
shortcut problems) to ``accessibility_validation_failures_total``: the counter counts
failed UI elements, so the guide's alert (``increase(...[5m]) > 20``) means "more than 20
failures in five minutes".
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from dchat_node.accessibility.contrast import Level, contrast_ratio, parse_hex, threshold
from dchat_node.accessibility.models import (
    ContrastReport,
    Keymap,
    PairResult,
    Preferences,
    PreferencesIn,
    ShortcutProblem,
    ShortcutReport,
    Theme,
)
from dchat_node.accessibility.shortcuts import Binding, check
from dchat_node.accessibility.store import PreferencesRecord, PreferencesStore
from dchat_node.config import AccessibilityConfig
from dchat_node.observability.metrics import AccessibilityMetrics

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class AccessibilityService:
    def __init__(
        self, config: AccessibilityConfig, store: PreferencesStore, metrics: AccessibilityMetrics
    ) -> None:
        self._config = config
        self._store = store
        self._metrics = metrics

    @property
    def level(self) -> Level:
        return Level.AAA if self._config.wcag_strict_mode else Level.AA

    def _failed(self, count: int) -> None:
        if count:
            self._metrics.validation_failures_total.inc(count)

    def validate_contrast(self, theme: Theme) -> ContrastReport:
        level = self.level
        failures: list[PairResult] = []
        passes: list[PairResult] = []
        for i, pair in enumerate(theme.pairs):
            fg = theme.resolve(pair.foreground)
            bg = theme.resolve(pair.background)
            ratio = contrast_ratio(parse_hex(fg), parse_hex(bg))
            minimum, criterion = threshold(level, pair.role)
            result = PairResult(
                index=i,
                name=pair.name,
                foreground=fg,
                background=bg,
                role=pair.role,
                ratio=ratio,
                threshold=minimum,
                criterion=criterion,
            )
            # unrounded: 4.478 fails 4.5 even though it prints as 4.5 at one decimal
            (passes if ratio >= minimum else failures).append(result)
        self._failed(len(failures))
        return ContrastReport(
            level=level,
            passed=not failures,
            checked=len(theme.pairs),
            failures=failures,
            passes=passes,
        )

    def validate_shortcuts(self, keymap: Keymap) -> ShortcutReport:
        if not self._config.keyboard_shortcut_conflict_check:
            # the shortcuts parsed (the model checks that); nothing else is looked for
            return ShortcutReport(
                conflict_check=False, passed=True, checked=len(keymap.shortcuts), problems=[]
            )
        bindings = [
            Binding(i, s.action, s.keys, s.context, s.can_disable, s.remappable, s.focus_only)
            for i, s in enumerate(keymap.shortcuts)
        ]
        problems = [
            ShortcutProblem(
                kind=p.kind,
                platform=p.platform,
                shortcut=p.shortcut,
                entries=list(p.entries),
                actions=list(p.actions),
                message=p.message,
                criterion=p.criterion,
                reserved_by=p.reserved_by,
            )
            for p in check(bindings, keymap.platforms)
        ]
        self._failed(len(problems))
        return ShortcutReport(
            conflict_check=True,
            passed=not problems,
            checked=len(keymap.shortcuts),
            problems=problems,
        )

    async def preferences(self, user_id: str) -> Preferences:
        """The user's preferences, or the defaults (``updated_at`` None) if never saved."""
        rec = await self._store.get(user_id)
        return Preferences() if rec is None else _preferences(rec)

    async def save_preferences(self, user_id: str, prefs: PreferencesIn) -> Preferences:
        rec = await self._store.put(
            user_id,
            font_scale=prefs.font_scale,
            high_contrast=prefs.high_contrast,
            reduced_motion=prefs.reduced_motion,
            screen_reader_hints=prefs.screen_reader_hints,
        )
        return _preferences(rec)


def _preferences(rec: PreferencesRecord) -> Preferences:
    return Preferences(
        font_scale=rec.font_scale,
        high_contrast=rec.high_contrast,
        reduced_motion=rec.reduced_motion,
        screen_reader_hints=rec.screen_reader_hints,
        updated_at=_EPOCH + timedelta(microseconds=rec.updated_at_us),
    )
