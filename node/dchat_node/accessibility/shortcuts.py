"""Keyboard shortcuts: parsing, normalisation and conflict checks.

Pure functions (no I/O), used by the accessibility service.

Design:
- A shortcut is written ``Mod+Mod+Key`` (``+`` separated, case-insensitive; the key ``+``
  itself is written ``Plus`` or as a trailing ``++``). Modifier aliases: Ctrl/Control/Ctl,
  Alt/Option/Opt, Shift, Meta/Cmd/Command/Super/Win/Windows, and ``Mod`` (the platform's
  primary modifier: Meta on macOS, Ctrl on Windows and Linux). A chord is normalised per
  platform to a set of modifiers and one key, written back in a fixed order
  (``Ctrl+Alt+Shift+Meta+Key``; letters upper case, named keys in their canonical spelling),
  so ``cmd+shift+k`` and ``Shift+Meta+K`` are the same chord on macOS.
- Checks (when ``accessibility.keyboard_shortcut_conflict_check`` is on), per platform asked:
  * duplicates: two keymap entries with the same chord in the same ``context``;
  * reserved: a chord the browser or the operating system takes for itself, from
    ``RESERVED`` below, or on macOS any chord holding Control+Option (VoiceOver's VO
    prefix; its commands add Shift or Command and a key);
  * WCAG 2.1.4 Character Key Shortcuts: a shortcut made only of a printable character
    (letter, digit, punctuation or symbol; Shift still types a character) must be
    possible to turn off (``can_disable``), to remap (``remappable``), or be active only
    while its component has focus (``focus_only``).
- ``RESERVED`` is a maintained table, not exhaustive. Sources (checked when written; update
  the table, not the logic, when a vendor changes a shortcut):
  * Chrome: https://support.google.com/chrome/answer/157179 (Chrome keyboard shortcuts,
    Windows & Linux and Mac tabs)
  * Firefox: https://support.mozilla.org/kb/keyboard-shortcuts-perform-firefox-tasks-quickly
  * macOS: https://support.apple.com/en-us/102650 (Mac keyboard shortcuts) and the VoiceOver
    user guide (VO = Control+Option), https://support.apple.com/guide/voiceover/
  * Windows: https://support.microsoft.com/windows/keyboard-shortcuts-in-windows-dcc61a57-8ff0-cffe-9796-cb9706c75eec
  * GNOME (Linux): https://help.gnome.org/users/gnome-help/stable/shell-keyboard-shortcuts.html
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum


class Platform(StrEnum):
    windows = "windows"
    mac = "mac"
    linux = "linux"


MODIFIER_ORDER = ("Ctrl", "Alt", "Shift", "Meta")
_MODIFIER_ALIASES = {
    "ctrl": "Ctrl",
    "control": "Ctrl",
    "ctl": "Ctrl",
    "alt": "Alt",
    "option": "Alt",
    "opt": "Alt",
    "shift": "Shift",
    "meta": "Meta",
    "cmd": "Meta",
    "command": "Meta",
    "super": "Meta",
    "win": "Meta",
    "windows": "Meta",
    "mod": "Mod",
}
_NAMED_KEYS = {
    "enter": "Enter",
    "return": "Enter",
    "esc": "Escape",
    "escape": "Escape",
    "space": "Space",
    "spacebar": "Space",
    "tab": "Tab",
    "backspace": "Backspace",
    "delete": "Delete",
    "del": "Delete",
    "insert": "Insert",
    "ins": "Insert",
    "home": "Home",
    "end": "End",
    "pageup": "PageUp",
    "pgup": "PageUp",
    "pagedown": "PageDown",
    "pgdn": "PageDown",
    "up": "ArrowUp",
    "arrowup": "ArrowUp",
    "down": "ArrowDown",
    "arrowdown": "ArrowDown",
    "left": "ArrowLeft",
    "arrowleft": "ArrowLeft",
    "right": "ArrowRight",
    "arrowright": "ArrowRight",
    "printscreen": "PrintScreen",
    "prtsc": "PrintScreen",
    "plus": "+",
    "minus": "-",
    "comma": ",",
    "period": ".",
    "slash": "/",
    "backquote": "`",
    "backtick": "`",
    **{f"f{n}": f"F{n}" for n in range(1, 25)},
}
MAX_SHORTCUT_CHARS = 64


class ShortcutError(ValueError):
    """A shortcut that does not parse (the message says why)."""


@dataclass(frozen=True, slots=True)
class Chord:
    modifiers: frozenset[str]  # subset of MODIFIER_ORDER
    key: str  # a printable character (letters upper case) or a named key

    def __str__(self) -> str:
        mods = [m for m in MODIFIER_ORDER if m in self.modifiers]
        return "+".join([*mods, "Plus" if self.key == "+" else self.key])

    @property
    def is_character_key(self) -> bool:
        """WCAG 2.1.4: only printable characters (Shift still types one), no Space."""
        return len(self.key) == 1 and self.key.isprintable() and self.modifiers <= {"Shift"}


def _split(text: str) -> tuple[list[str], str]:
    if text.endswith("++"):
        return [p for p in text[:-2].split("+")], "+"
    *mods, key = text.split("+")
    return mods, key


def _modifiers(names: list[str], platform: Platform) -> frozenset[str]:
    modifiers: set[str] = set()
    for raw in names:
        name = _MODIFIER_ALIASES.get(raw.strip().lower())
        if name is None:
            raise ShortcutError(
                f"{raw!r} is not a modifier (Ctrl, Alt, Shift, Meta, Mod or an alias)"
            )
        if name == "Mod":
            name = "Meta" if platform is Platform.mac else "Ctrl"
        if name in modifiers:
            raise ShortcutError(f"modifier {name} appears twice")
        modifiers.add(name)
    return frozenset(modifiers)


def _key(raw: str) -> str:
    key = raw.strip()
    if not key:
        raise ShortcutError("a shortcut needs a key after its modifiers")
    if key.lower() in _MODIFIER_ALIASES:
        raise ShortcutError(f"{key!r} is a modifier; a shortcut ends with a key")
    named = _NAMED_KEYS.get(key.lower())
    if named is not None:
        return named
    if len(key) == 1 and key.isprintable():
        return key.upper()
    raise ShortcutError(f"{key!r} is not a key (one character or a named key like Enter, F5)")


def parse(text: str, platform: Platform) -> Chord:
    """``text`` as a chord on ``platform``; ShortcutError saying what is wrong."""
    if not text or len(text) > MAX_SHORTCUT_CHARS:
        raise ShortcutError(f"a shortcut has 1 to {MAX_SHORTCUT_CHARS} characters")
    if text != text.strip() or any(c.isspace() and c != " " for c in text):
        raise ShortcutError("a shortcut has no surrounding whitespace (write Space for the key)")
    mods, key = _split(text)
    return Chord(_modifiers(mods, platform), _key(key))


@dataclass(frozen=True, slots=True)
class Reserved:
    owner: str  # "browser", "os" or "assistive technology"
    description: str


def _table(owner: str, rows: Iterable[tuple[str, str]]) -> dict[Chord, Reserved]:
    # parsed with the mac parser only for the Mod alias, which these rows never use
    return {parse(k, Platform.mac): Reserved(owner, d) for k, d in rows}


_BROWSER_PC = [
    ("Ctrl+T", "new tab"),
    ("Ctrl+N", "new window"),
    ("Ctrl+Shift+N", "new incognito window (Chrome)"),
    ("Ctrl+Shift+P", "new private window (Firefox)"),
    ("Ctrl+W", "close tab"),
    ("Ctrl+F4", "close tab"),
    ("Ctrl+Shift+W", "close window"),
    ("Ctrl+Shift+T", "reopen closed tab"),
    ("Ctrl+Tab", "next tab"),
    ("Ctrl+Shift+Tab", "previous tab"),
    ("Ctrl+PageDown", "next tab"),
    ("Ctrl+PageUp", "previous tab"),
    *((f"Ctrl+{n}", f"go to tab {n}") for n in range(1, 9)),
    ("Ctrl+9", "go to last tab"),
    ("Alt+Home", "home page"),
    ("Alt+Left", "back"),
    ("Alt+Right", "forward"),
    ("F5", "reload"),
    ("Ctrl+R", "reload"),
    ("Shift+F5", "reload ignoring cache"),
    ("Ctrl+Shift+R", "reload ignoring cache"),
    ("Ctrl+L", "focus the address bar"),
    ("Alt+D", "focus the address bar"),
    ("F6", "focus the address bar / cycle panes"),
    ("Ctrl+K", "search from the address bar"),
    ("Ctrl+E", "search from the address bar"),
    ("Ctrl+F", "find in page"),
    ("F3", "find next"),
    ("Ctrl+G", "find next"),
    ("Ctrl+Shift+G", "find previous"),
    ("Ctrl+P", "print"),
    ("Ctrl+S", "save page"),
    ("Ctrl+O", "open file"),
    ("Ctrl+D", "bookmark page"),
    ("Ctrl+Shift+B", "show/hide bookmarks bar"),
    ("Ctrl+H", "history"),
    ("Ctrl+J", "downloads"),
    ("Ctrl+Shift+Delete", "clear browsing data"),
    ("Ctrl+U", "view page source"),
    ("Ctrl+Shift+I", "developer tools"),
    ("Ctrl+Shift+J", "developer console"),
    ("F12", "developer tools"),
    ("Ctrl+Plus", "zoom in"),
    ("Ctrl+=", "zoom in"),
    ("Ctrl+Minus", "zoom out"),
    ("Ctrl+0", "reset zoom"),
    ("F11", "full screen"),
    ("F10", "menu bar / browser menu"),
    ("Alt+F", "browser menu (Chrome)"),
    ("Alt+E", "browser menu (Chrome)"),
]
_BROWSER_MAC = [
    ("Meta+T", "new tab"),
    ("Meta+N", "new window"),
    ("Meta+Shift+N", "new incognito window (Chrome)"),
    ("Meta+Shift+P", "new private window (Firefox)"),
    ("Meta+W", "close tab"),
    ("Meta+Shift+W", "close window"),
    ("Meta+Shift+T", "reopen closed tab"),
    ("Ctrl+Tab", "next tab"),
    ("Ctrl+Shift+Tab", "previous tab"),
    ("Meta+Alt+Right", "next tab"),
    ("Meta+Alt+Left", "previous tab"),
    *((f"Meta+{n}", f"go to tab {n}") for n in range(1, 9)),
    ("Meta+9", "go to last tab"),
    ("Meta+[", "back"),
    ("Meta+]", "forward"),
    ("Meta+Left", "back"),
    ("Meta+Right", "forward"),
    ("Meta+R", "reload"),
    ("Meta+Shift+R", "reload ignoring cache"),
    ("Meta+L", "focus the address bar"),
    ("Meta+F", "find in page"),
    ("Meta+G", "find next"),
    ("Meta+Shift+G", "find previous"),
    ("Meta+E", "use selection for find"),
    ("Meta+P", "print"),
    ("Meta+S", "save page"),
    ("Meta+O", "open file"),
    ("Meta+D", "bookmark page"),
    ("Meta+Shift+B", "show/hide bookmarks bar"),
    ("Meta+Y", "history (Chrome)"),
    ("Meta+Shift+J", "downloads (Chrome)"),
    ("Meta+Alt+I", "developer tools"),
    ("Meta+Alt+J", "developer console"),
    ("Meta+Alt+U", "view page source"),
    ("Meta+Plus", "zoom in"),
    ("Meta+=", "zoom in"),
    ("Meta+Minus", "zoom out"),
    ("Meta+0", "reset zoom"),
    ("Meta+Ctrl+F", "full screen"),
    ("Meta+,", "settings"),
]
_OS_WINDOWS = [
    ("Alt+Tab", "switch windows"),
    ("Alt+Shift+Tab", "switch windows backwards"),
    ("Alt+F4", "close the window"),
    ("Alt+Space", "window menu"),
    ("Ctrl+Alt+Delete", "security screen"),
    ("Ctrl+Shift+Escape", "Task Manager"),
    ("Ctrl+Escape", "Start menu"),
    ("Meta+L", "lock the PC"),
    ("Meta+D", "show the desktop"),
    ("Meta+E", "File Explorer"),
    ("Meta+R", "Run dialog"),
    ("Meta+I", "Settings"),
    ("Meta+A", "quick settings"),
    ("Meta+S", "search"),
    ("Meta+V", "clipboard history"),
    ("Meta+X", "quick link menu"),
    ("Meta+M", "minimise all windows"),
    ("Meta+Tab", "Task view"),
    ("Meta+.", "emoji panel"),
    ("Meta+Shift+S", "screenshot"),
    ("Meta+Up", "maximise the window"),
    ("Meta+Down", "minimise / restore the window"),
    ("Meta+Left", "snap the window left"),
    ("Meta+Right", "snap the window right"),
    ("PrintScreen", "screenshot"),
    ("Ctrl+C", "copy"),
    ("Ctrl+X", "cut"),
    ("Ctrl+V", "paste"),
    ("Ctrl+Z", "undo"),
    ("Ctrl+Y", "redo"),
    ("Ctrl+A", "select all"),
]
_OS_LINUX = [
    ("Alt+Tab", "switch applications"),
    ("Alt+Shift+Tab", "switch applications backwards"),
    ("Alt+`", "switch windows of an application"),
    ("Alt+F4", "close the window"),
    ("Alt+F2", "run a command"),
    ("Alt+Space", "window menu"),
    ("Ctrl+Alt+Delete", "log out"),
    ("Ctrl+Alt+T", "terminal (Ubuntu)"),
    ("Meta+L", "lock the screen"),
    ("Meta+A", "show applications"),
    ("Meta+V", "notification list"),
    ("Meta+Tab", "switch applications"),
    ("Meta+Space", "switch input source"),
    ("Meta+Up", "maximise the window"),
    ("Meta+Down", "restore the window"),
    ("Meta+Left", "tile the window left"),
    ("Meta+Right", "tile the window right"),
    ("Meta+PageUp", "previous workspace"),
    ("Meta+PageDown", "next workspace"),
    ("Ctrl+Alt+Left", "previous workspace"),
    ("Ctrl+Alt+Right", "next workspace"),
    ("PrintScreen", "screenshot"),
    ("Shift+PrintScreen", "screenshot"),
    ("Alt+PrintScreen", "screenshot of the window"),
    ("Ctrl+C", "copy"),
    ("Ctrl+X", "cut"),
    ("Ctrl+V", "paste"),
    ("Ctrl+Z", "undo"),
    ("Ctrl+A", "select all"),
]
_OS_MAC = [
    ("Meta+Tab", "switch applications"),
    ("Meta+`", "switch windows of an application"),
    ("Meta+Space", "Spotlight"),
    ("Ctrl+Space", "switch input source"),
    ("Ctrl+Meta+Space", "Character Viewer (emoji)"),
    ("Meta+Alt+Escape", "Force Quit"),
    ("Ctrl+Meta+Q", "lock the screen"),
    ("Meta+Shift+Q", "log out"),
    ("Meta+Q", "quit the application"),
    ("Meta+H", "hide the application"),
    ("Meta+Alt+H", "hide other applications"),
    ("Meta+M", "minimise the window"),
    ("Meta+Alt+D", "show/hide the Dock"),
    ("Meta+Shift+3", "screenshot"),
    ("Meta+Shift+4", "screenshot of a selection"),
    ("Meta+Shift+5", "screenshot tools"),
    ("Meta+Shift+/", "Help menu"),
    ("Meta+?", "Help menu"),
    ("Meta+F5", "VoiceOver on/off"),
    ("Meta+Alt+F5", "Accessibility Shortcuts"),
    ("Ctrl+Up", "Mission Control"),
    ("Ctrl+Down", "application windows"),
    ("Ctrl+Left", "previous Space"),
    ("Ctrl+Right", "next Space"),
    ("Meta+C", "copy"),
    ("Meta+X", "cut"),
    ("Meta+V", "paste"),
    ("Meta+Z", "undo"),
    ("Meta+Shift+Z", "redo"),
    ("Meta+A", "select all"),
]

_BROWSER_WINDOWS = [("Ctrl+Shift+Q", "quit (Firefox)")]
_BROWSER_LINUX = [("Ctrl+Q", "quit (Firefox)")]

RESERVED: dict[Platform, dict[Chord, Reserved]] = {
    Platform.windows: {
        **_table("browser", [*_BROWSER_PC, *_BROWSER_WINDOWS]),
        **_table("os", _OS_WINDOWS),
    },
    Platform.linux: {
        **_table("browser", [*_BROWSER_PC, *_BROWSER_LINUX]),
        **_table("os", _OS_LINUX),
    },
    Platform.mac: {**_table("browser", _BROWSER_MAC), **_table("os", _OS_MAC)},
}
_VOICEOVER = Reserved("assistive technology", "VoiceOver command (VO = Control+Option)")


def reserved(chord: Chord, platform: Platform) -> Reserved | None:
    """Who takes ``chord`` on ``platform`` before the page, if anyone."""
    found = RESERVED[platform].get(chord)
    if found is not None:
        return found
    if platform is Platform.mac and {"Ctrl", "Alt"} <= chord.modifiers:
        return _VOICEOVER  # VO (Control+Option), with or without Shift/Command, + any key
    return None


@dataclass(frozen=True, slots=True)
class Binding:
    """One keymap entry as the checks see it."""

    index: int
    action: str
    keys: str
    context: str
    can_disable: bool
    remappable: bool
    focus_only: bool


@dataclass(frozen=True, slots=True)
class Problem:
    kind: str  # "duplicate", "reserved" or "character_key"
    platform: Platform
    shortcut: str  # the normalised chord
    entries: tuple[int, ...]  # keymap indexes involved
    actions: tuple[str, ...]
    message: str
    criterion: str | None = None
    reserved_by: str | None = None


def check(bindings: Sequence[Binding], platforms: Sequence[Platform]) -> list[Problem]:
    """Every problem of ``bindings`` on each of ``platforms`` (ShortcutError on a shortcut
    that does not parse)."""
    problems: list[Problem] = []
    for platform in platforms:
        chords = [parse(b.keys, platform) for b in bindings]
        groups: dict[tuple[str, Chord], list[Binding]] = defaultdict(list)
        for b, chord in zip(bindings, chords, strict=True):
            groups[(b.context, chord)].append(b)
        for (context, chord), group in groups.items():
            if len(group) > 1:
                problems.append(
                    Problem(
                        "duplicate",
                        platform,
                        str(chord),
                        tuple(b.index for b in group),
                        tuple(b.action for b in group),
                        f"{chord} is bound {len(group)} times in context {context!r}",
                    )
                )
        for b, chord in zip(bindings, chords, strict=True):
            owner = reserved(chord, platform)
            if owner is not None:
                problems.append(
                    Problem(
                        "reserved",
                        platform,
                        str(chord),
                        (b.index,),
                        (b.action,),
                        f"{chord} is taken by the {owner.owner} on {platform}: {owner.description}",
                        reserved_by=owner.owner,
                    )
                )
            if chord.is_character_key and not (b.can_disable or b.remappable or b.focus_only):
                problems.append(
                    Problem(
                        "character_key",
                        platform,
                        str(chord),
                        (b.index,),
                        (b.action,),
                        f"{chord} is a single-character shortcut that cannot be turned off, "
                        "remapped, or limited to focus",
                        criterion="2.1.4 Character Key Shortcuts",
                    )
                )
    return problems
