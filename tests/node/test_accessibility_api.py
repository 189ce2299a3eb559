"""The accessibility API in-process: contrast and shortcut reports, strict mode, the
conflict-check switch, the failure counter, preferences per user, and 4xx bodies for
garbage (bad hex, unknown role or token, oversized lists, no token)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from quart.typing import TestClientProtocol as Client

from dchat_node.accessibility.models import MAX_COLOURS, MAX_PAIRS, MAX_SHORTCUTS
from dchat_node.app import create_api_app
from dchat_node.config import NodeConfig
from dchat_node.services import Services, build_services
from dchat_node.storage import Storage, open_storage
from tests.node.conftest import bearer, config_for, make_token

pytestmark = pytest.mark.unit

CONTRAST = "/api/v1/accessibility/contrast"
SHORTCUTS = "/api/v1/accessibility/shortcuts"
PREFS = "/api/v1/accessibility/preferences"
MUTED = {"foreground": "grey", "background": "bg", "role": "text", "name": "muted"}
THEME: dict[str, Any] = {
    "colors": {"bg": "#ffffff", "grey": "#777777", "dark": "#767676", "ink": "#000"},
    "pairs": [
        MUTED,
        {"foreground": "grey", "background": "bg", "role": "large-text"},
        {"foreground": "dark", "background": "bg", "role": "text"},
        {"foreground": "ink", "background": "bg", "role": "ui"},
        {"foreground": "#00000080", "background": "bg", "role": "text", "name": "overlay"},
    ],
}


def failures(services: Services) -> float:
    value: float = services.metrics.accessibility.validation_failures_total._value.get()
    return value


async def make_client(tmp_path: Path, **accessibility: Any) -> tuple[Client, Services, Storage]:
    cfg: NodeConfig = config_for(tmp_path, accessibility=accessibility)
    storage = await open_storage(cfg.database)
    await storage.migrate()
    services = build_services(cfg, storage)
    return create_api_app(services).test_client(), services, storage


@pytest.fixture
async def aa(tmp_path: Path) -> Any:
    client, services, storage = await make_client(
        tmp_path, wcag_strict_mode=False, keyboard_shortcut_conflict_check=True
    )
    yield client, services
    await storage.close()


async def test_contrast_report_aa(aa: tuple[Client, Services]) -> None:
    client, services = aa
    r = await client.post(CONTRAST, json=THEME, headers=bearer())
    assert r.status_code == 200, await r.get_data(as_text=True)
    body = await r.get_json()
    assert body["level"] == "AA"
    assert body["passed"] is False
    assert body["checked"] == 5
    failed = {(f["index"], f["name"]) for f in body["failures"]}
    assert failed == {(0, "muted"), (4, "overlay")}
    muted = body["failures"][0]
    assert muted["threshold"] == 4.5
    assert 4.478 < muted["ratio"] < 4.479
    assert muted["criterion"] == "1.4.3 Contrast (Minimum)"
    assert muted["foreground"] == "#777777"
    passes = {p["index"]: p for p in body["passes"]}
    assert set(passes) == {1, 2, 3}
    assert passes[3]["ratio"] == 21.0
    assert passes[3]["criterion"] == "1.4.11 Non-text Contrast"
    assert failures(services) == 2
    # a theme without failures does not count
    ok = {"pairs": [{"foreground": "#000", "background": "#fff", "role": "text"}]}
    r = await client.post(CONTRAST, json=ok, headers=bearer())
    assert (await r.get_json())["passed"] is True
    assert failures(services) == 2


async def test_contrast_strict_mode_is_aaa(tmp_path: Path) -> None:
    client, services, storage = await make_client(tmp_path, wcag_strict_mode=True)
    try:
        r = await client.post(CONTRAST, json=THEME, headers=bearer())
        body = await r.get_json()
        assert body["level"] == "AAA"
        by_index = {f["index"]: f for f in body["failures"]}
        # #777777: fails 7:1 text and 4.5:1 large text; #767676 fails 7:1; UI stays 3:1
        assert set(by_index) == {0, 1, 2, 4}
        assert by_index[1]["threshold"] == 4.5
        assert by_index[2]["threshold"] == 7.0
        assert [p["index"] for p in body["passes"]] == [3]
        assert body["passes"][0]["threshold"] == 3.0
        assert failures(services) == 4
    finally:
        await storage.close()


async def test_shortcut_report(aa: tuple[Client, Services]) -> None:
    client, services = aa
    keymap = {
        "shortcuts": [
            {"action": "search", "keys": "Mod+K", "remappable": True},
            {"action": "next", "keys": "j"},
            {"action": "prev", "keys": "k", "can_disable": True},
            {"action": "quick", "keys": "alt+shift+q", "remappable": True},
            {"action": "quick2", "keys": "Shift+Alt+Q", "remappable": True},
        ],
        "platforms": ["windows", "mac"],
    }
    r = await client.post(SHORTCUTS, json=keymap, headers=bearer())
    assert r.status_code == 200, await r.get_data(as_text=True)
    body = await r.get_json()
    assert body["conflict_check"] is True
    assert body["passed"] is False
    assert body["checked"] == 5
    got = {(p["kind"], p["platform"], p["shortcut"], tuple(p["entries"])) for p in body["problems"]}
    assert got == {
        ("reserved", "windows", "Ctrl+K", (0,)),  # browser: search from the address bar
        ("character_key", "windows", "J", (1,)),
        ("character_key", "mac", "J", (1,)),
        ("duplicate", "windows", "Alt+Shift+Q", (3, 4)),
        ("duplicate", "mac", "Alt+Shift+Q", (3, 4)),
    }
    char = next(p for p in body["problems"] if p["kind"] == "character_key")
    assert char["criterion"] == "2.1.4 Character Key Shortcuts"
    assert failures(services) == 5


async def test_conflict_check_off_only_parses(tmp_path: Path) -> None:
    client, services, storage = await make_client(tmp_path, keyboard_shortcut_conflict_check=False)
    try:
        keymap = {"shortcuts": [{"action": "a", "keys": "j"}, {"action": "b", "keys": "j"}]}
        r = await client.post(SHORTCUTS, json=keymap, headers=bearer())
        assert await r.get_json() == {
            "conflict_check": False,
            "passed": True,
            "checked": 2,
            "problems": [],
        }
        assert failures(services) == 0
        bad = {"shortcuts": [{"action": "a", "keys": "Ctrl+Hyper"}]}
        assert (await client.post(SHORTCUTS, json=bad, headers=bearer())).status_code == 422
    finally:
        await storage.close()


def _fields(body: dict[str, Any]) -> str:
    return " ".join(f"{f['field']}: {f['message']}" for f in body["error"].get("fields", []))


@pytest.mark.parametrize(
    ("path", "payload", "says"),
    [
        (CONTRAST, {"colors": {"a": "#12345"}, "pairs": []}, "colors.a"),
        (CONTRAST, {"colors": {"a": "red"}, "pairs": [MUTED]}, "colors.a"),
        (
            CONTRAST,
            {"pairs": [{"foreground": "#000", "background": "#fff", "role": "huge"}]},
            "pairs.0.role",
        ),
        (
            CONTRAST,
            {"pairs": [{"foreground": "nope", "background": "#fff", "role": "text"}]},
            "'nope' is not a colour of the theme",
        ),
        (
            CONTRAST,
            {"pairs": [{"foreground": "#000", "background": "#ffffff80", "role": "ui"}]},
            "must be opaque",
        ),
        (CONTRAST, {"pairs": []}, "pairs"),
        (CONTRAST, {"pairs": [{"foreground": "#000", "background": "#fff"}]}, "role"),
        (
            CONTRAST,
            {"colors": {f"c{i}": "#000" for i in range(MAX_COLOURS + 1)}, "pairs": []},
            "colors",
        ),
        (
            CONTRAST,
            {
                "pairs": [{"foreground": "#000", "background": "#fff", "role": "ui"}]
                * (MAX_PAIRS + 1)
            },
            "pairs",
        ),
        (CONTRAST, {"pairs": [], "extra": 1}, "extra"),
        (SHORTCUTS, {"shortcuts": [{"action": "a", "keys": "Ctrl+Ctrl+K"}]}, "appears twice"),
        (SHORTCUTS, {"shortcuts": [{"action": "a", "keys": "Ctrl+Nope"}]}, "not a key"),
        (
            SHORTCUTS,
            {"shortcuts": [{"action": "a", "keys": "j"}], "platforms": ["amiga"]},
            "platforms.0",
        ),
        (
            SHORTCUTS,
            {"shortcuts": [{"action": "a", "keys": "j"}], "platforms": ["mac", "mac"]},
            "at most once",
        ),
        (
            SHORTCUTS,
            {"shortcuts": [{"action": "a", "keys": "F1"}] * (MAX_SHORTCUTS + 1)},
            "shortcuts",
        ),
        (SHORTCUTS, {"shortcuts": [{"action": "", "keys": "F1"}]}, "shortcuts.0.action"),
    ],
)
async def test_garbage_is_422_saying_what(
    aa: tuple[Client, Services], path: str, payload: dict[str, Any], says: str
) -> None:
    client, services = aa
    r = await client.post(path, json=payload, headers=bearer())
    assert r.status_code == 422, await r.get_data(as_text=True)
    body = await r.get_json()
    assert body["error"]["code"] == "validation_failed"
    assert says in _fields(body)
    assert failures(services) == 0  # garbage is not a validation failure of a UI


async def test_not_json_and_no_token(aa: tuple[Client, Services]) -> None:
    client, _ = aa
    r = await client.post(
        CONTRAST, data=b"{not json", headers={**bearer(), "Content-Type": "application/json"}
    )
    assert r.status_code == 400
    for method, path in [("POST", CONTRAST), ("POST", SHORTCUTS), ("GET", PREFS), ("PUT", PREFS)]:
        r = await client.open(path, method=method, json={})
        assert r.status_code == 401, (method, path)
        assert (await r.get_json())["error"]["code"]


async def test_preferences_per_user(aa: tuple[Client, Services]) -> None:
    client, _ = aa
    alice, bob = bearer(make_token("alice")), bearer(make_token("bob"))
    r = await client.get(PREFS, headers=alice)
    assert r.status_code == 200
    assert await r.get_json() == {
        "font_scale": 1.0,
        "high_contrast": False,
        "reduced_motion": False,
        "screen_reader_hints": False,
        "updated_at": None,
    }
    r = await client.put(
        PREFS, json={"font_scale": 2, "high_contrast": True, "reduced_motion": True}, headers=alice
    )
    assert r.status_code == 200, await r.get_data(as_text=True)
    saved = await r.get_json()
    assert saved["font_scale"] == 2.0
    assert saved["high_contrast"] is True
    assert saved["screen_reader_hints"] is False
    assert saved["updated_at"].endswith("Z")
    assert await (await client.get(PREFS, headers=alice)).get_json() == saved
    assert (await (await client.get(PREFS, headers=bob)).get_json())["updated_at"] is None
    # PUT replaces the whole document: omitted fields go back to their defaults
    r = await client.put(PREFS, json={"screen_reader_hints": True}, headers=alice)
    again = await r.get_json()
    assert (again["font_scale"], again["high_contrast"], again["screen_reader_hints"]) == (
        1.0,
        False,
        True,
    )


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"font_scale": 0.49}, "font_scale"),
        ({"font_scale": 4.01}, "font_scale"),
        ({"font_scale": "big"}, "font_scale"),
        ({"high_contrast": "maybe"}, "high_contrast"),
        ({"theme": "dark"}, "theme"),
    ],
)
async def test_preferences_bounds(
    aa: tuple[Client, Services], payload: dict[str, Any], field: str
) -> None:
    client, _ = aa
    r = await client.put(PREFS, json=payload, headers=bearer())
    assert r.status_code == 422
    assert field in _fields(await r.get_json())


async def test_routes_are_in_openapi(aa: tuple[Client, Services]) -> None:
    client, _ = aa
    doc = await (await client.get("/openapi.json")).get_json()
    assert {"post"} <= set(doc["paths"][CONTRAST])
    assert {"post"} <= set(doc["paths"][SHORTCUTS])
    assert {"get", "put"} <= set(doc["paths"][PREFS])
