"""The pure accessibility checks against known WCAG values: contrast ratios (black/white
21:1, pairs either side of 4.5:1, the 0.04045 cutoff, alpha compositing) and keyboard
shortcut parsing and conflicts (duplicates, reserved chords, WCAG 2.1.4)."""

from __future__ import annotations

import pytest

from dchat_node.accessibility.contrast import (
    SRGB_CUTOFF,
    Level,
    Rgba,
    Role,
    contrast_ratio,
    linearise,
    parse_hex,
    relative_luminance,
    threshold,
)
from dchat_node.accessibility.shortcuts import (
    Binding,
    Platform,
    ShortcutError,
    check,
    parse,
    reserved,
)

pytestmark = pytest.mark.unit

WHITE = parse_hex("#ffffff")


def ratio(fg: str, bg: str = "#ffffff") -> float:
    return contrast_ratio(parse_hex(fg), parse_hex(bg))


# -- contrast -----------------------------------------------------------------------------


def test_black_on_white_is_exactly_21() -> None:
    assert relative_luminance(WHITE) == 1.0
    assert relative_luminance(parse_hex("#000")) == 0.0
    assert ratio("#000000") == 21.0
    assert ratio("#ffffff", "#000000") == 21.0  # symmetric
    assert ratio("#abcdef", "#abcdef") == 1.0


def test_777777_on_white_just_below_aa_text_passes_large_text() -> None:
    r = ratio("#777777")
    assert 4.478 < r < 4.479  # WebAIM's checker shows 4.47:1
    assert round(r, 1) == 4.5  # rounds to the threshold, yet fails: compared unrounded
    text, _ = threshold(Level.AA, Role.text)
    large, _ = threshold(Level.AA, Role.large_text)
    assert r < text
    assert r >= large


def test_767676_on_white_just_above_aa() -> None:
    r = ratio("#767676")
    assert 4.54 < r < 4.55
    assert r >= threshold(Level.AA, Role.text)[0]
    assert r < threshold(Level.AAA, Role.text)[0]  # fails AAA text (7:1)
    assert r >= threshold(Level.AAA, Role.large_text)[0]  # passes AAA large text (4.5:1)


def test_aaa_thresholds_and_ui_stays_3_to_1() -> None:
    assert threshold(Level.AA, Role.text)[0] == 4.5
    assert threshold(Level.AAA, Role.text)[0] == 7.0
    assert threshold(Level.AA, Role.large_text)[0] == 3.0
    assert threshold(Level.AAA, Role.large_text)[0] == 4.5
    # SC 1.4.11 Non-text Contrast has no AAA level
    assert (
        threshold(Level.AA, Role.ui)
        == threshold(Level.AAA, Role.ui)
        == (
            3.0,
            "1.4.11 Non-text Contrast",
        )
    )
    # #595959 on white is 7.0:1 (just above); #5a5a5a just below
    assert ratio("#595959") >= 7.0 > ratio("#5a5a5a")


def test_srgb_cutoff_is_0_04045_and_inclusive() -> None:
    assert SRGB_CUTOFF == 0.04045
    # at the cutoff: the linear branch
    assert linearise(0.04045) == 0.04045 / 12.92
    # between WCAG 2.0's 0.03928 and 0.04045: still the linear branch in WCAG 2.2
    assert linearise(0.04) == 0.04 / 12.92
    assert linearise(0.04) != ((0.04 + 0.055) / 1.055) ** 2.4
    # just above: the power branch
    above = 0.0405
    assert linearise(above) == ((above + 0.055) / 1.055) ** 2.4
    # the two branches meet at the cutoff (continuous to 1e-7)
    assert abs(((0.04045 + 0.055) / 1.055) ** 2.4 - 0.04045 / 12.92) < 1e-7
    # 8-bit values either side: 10/255 = 0.0392 (linear), 11/255 = 0.0431 (power)
    assert linearise(10 / 255) == 10 / 255 / 12.92
    assert linearise(11 / 255) == ((11 / 255 + 0.055) / 1.055) ** 2.4


def test_hex_forms_and_alpha_compositing() -> None:
    assert parse_hex("#fff") == parse_hex("#FFFFFF") == parse_hex("#ffffffff")
    assert parse_hex("#0008").a == pytest.approx(0x88 / 255)
    # half-transparent black over white composites to mid grey (127.5 of 255): the same
    # ratio as that grey, not black's 21:1
    half = parse_hex("#00000080")
    grey = 1 - 0x80 / 255
    r = contrast_ratio(half, WHITE)
    assert r == contrast_ratio(Rgba(grey, grey, grey), WHITE)
    assert 3.9 < r < 4.1
    # fully transparent text is invisible: 1:1
    assert contrast_ratio(parse_hex("#00000000"), WHITE) == 1.0
    with pytest.raises(ValueError, match="opaque"):
        contrast_ratio(parse_hex("#000"), parse_hex("#ffffff80"))


@pytest.mark.parametrize("bad", ["fff", "#ff", "#fffff", "#ggg", "#fffffff", "#fffffffff", ""])
def test_bad_hex_is_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="not a hex colour"):
        parse_hex(bad)


# -- shortcuts ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "platform", "normal"),
    [
        ("cmd+shift+k", Platform.mac, "Shift+Meta+K"),
        ("Shift+Command+K", Platform.mac, "Shift+Meta+K"),
        ("Mod+K", Platform.mac, "Meta+K"),
        ("Mod+K", Platform.windows, "Ctrl+K"),
        ("Control+Option+Del", Platform.linux, "Ctrl+Alt+Delete"),
        ("ctrl++", Platform.linux, "Ctrl+Plus"),
        ("Ctrl + Return", Platform.windows, "Ctrl+Enter"),
        ("Win+L", Platform.windows, "Meta+L"),
        ("?", Platform.linux, "?"),
        ("f5", Platform.windows, "F5"),
    ],
)
def test_parse_normalises(text: str, platform: Platform, normal: str) -> None:
    assert str(parse(text, platform)) == normal


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("", "1 to 64"),
        ("Ctrl+Ctrl+K", "appears twice"),
        ("Hyper+K", "not a modifier"),
        ("Ctrl+", "needs a key"),
        ("Ctrl+Shift", "is a modifier"),
        ("Ctrl+Enterr", "not a key"),
        (" K", "whitespace"),
        ("Ctrl+\tK", "whitespace"),
        ("K" * 65, "1 to 64"),
    ],
)
def test_parse_refuses_garbage(text: str, why: str) -> None:
    with pytest.raises(ShortcutError, match=why):
        parse(text, Platform.windows)


def _b(i: int, keys: str, **kw: object) -> Binding:
    fields: dict[str, object] = {
        "context": "global",
        "can_disable": False,
        "remappable": True,
        "focus_only": False,
    }
    fields.update(kw)
    return Binding(i, f"action-{i}", keys, **fields)  # type: ignore[arg-type]


def test_duplicates_after_normalisation_per_context() -> None:
    problems = check(
        [_b(0, "Alt+Shift+J"), _b(1, "shift+option+j"), _b(2, "Alt+Shift+J", context="dialog")],
        [Platform.windows],
    )
    assert [(p.kind, p.shortcut, p.entries) for p in problems] == [
        ("duplicate", "Alt+Shift+J", (0, 1))
    ]


def test_mod_duplicates_only_where_it_expands_to_the_same_chord() -> None:
    keymap = [_b(0, "Mod+Shift+Y"), _b(1, "Ctrl+Shift+Y")]
    assert [p.platform for p in check(keymap, list(Platform)) if p.kind == "duplicate"] == [
        Platform.windows,
        Platform.linux,
    ]


def test_reserved_browser_os_and_voiceover() -> None:
    assert reserved(parse("Ctrl+T", Platform.windows), Platform.windows) is not None
    assert reserved(parse("Ctrl+T", Platform.mac), Platform.mac) is None  # Cmd+T on a Mac
    found = reserved(parse("Mod+W", Platform.mac), Platform.mac)
    assert found is not None
    assert found.owner == "browser"
    os_owned = reserved(parse("Alt+Tab", Platform.linux), Platform.linux)
    assert os_owned is not None
    assert os_owned.owner == "os"
    vo = reserved(parse("Ctrl+Alt+Shift+U", Platform.mac), Platform.mac)
    assert vo is not None
    assert vo.owner == "assistive technology"
    vo_cmd = reserved(parse("Ctrl+Alt+Cmd+H", Platform.mac), Platform.mac)
    assert vo_cmd is not None
    assert vo_cmd.owner == "assistive technology"
    assert reserved(parse("Ctrl+Alt+H", Platform.windows), Platform.windows) is None
    # Firefox's quit differs by platform
    assert reserved(parse("Ctrl+Q", Platform.linux), Platform.linux) is not None
    assert reserved(parse("Ctrl+Q", Platform.windows), Platform.windows) is None
    assert reserved(parse("Ctrl+Shift+Q", Platform.windows), Platform.windows) is not None
    assert reserved(parse("Ctrl+Shift+Y", Platform.windows), Platform.windows) is None
    problems = check([_b(0, "Mod+T")], list(Platform))
    assert {(p.kind, p.platform, p.reserved_by) for p in problems} == {
        ("reserved", Platform.windows, "browser"),
        ("reserved", Platform.linux, "browser"),
        ("reserved", Platform.mac, "browser"),
    }


def test_character_key_shortcuts_wcag_2_1_4() -> None:
    keymap = [
        _b(0, "k", remappable=False),  # fails: no modifier, fixed
        _b(1, "Shift+?", remappable=False),  # fails: Shift still types a character
        _b(2, "j", remappable=False, can_disable=True),  # can be turned off
        _b(3, "n", remappable=True),  # can be remapped
        _b(4, "e", remappable=False, focus_only=True),  # only while focused
        _b(5, "Ctrl+Shift+Y", remappable=False),  # has a non-printing modifier
        _b(6, "Escape", remappable=False),  # not a character key
        _b(7, "Space", remappable=False),  # space is not a letter/number/symbol
    ]
    problems = check(keymap, [Platform.linux])
    assert [(p.kind, p.entries, p.criterion) for p in problems] == [
        ("character_key", (0,), "2.1.4 Character Key Shortcuts"),
        ("character_key", (1,), "2.1.4 Character Key Shortcuts"),
    ]


def test_a_clean_keymap_has_no_problems() -> None:
    keymap = [_b(0, "Alt+Shift+Y"), _b(1, "Alt+Shift+U"), _b(2, "g", focus_only=True)]
    assert check(keymap, [Platform.windows, Platform.linux]) == []
