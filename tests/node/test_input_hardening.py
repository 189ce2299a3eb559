"""Hostile input: deeply nested JSON bodies are 400 (not a RecursionError 500) with a body
saying what is wrong; path ids are ASCII digits only (no Unicode digits resolving to an
id)."""

from __future__ import annotations

import json
import sys

import pytest
from quart.typing import TestClientProtocol as Client

from dchat_node.app import MAX_JSON_DEPTH, json_too_deep
from tests.node.conftest import bearer

pytestmark = pytest.mark.unit

JSON = {**bearer(), "Content-Type": "application/json"}


@pytest.mark.parametrize(
    "body",
    [
        b"[" * 100_000 + b"]" * 100_000,
        b'{"name": "x", "topic": ' + b'{"a":' * 50_000 + b"1" + b"}" * 50_000 + b"}",
        b"[" * 100_000,  # not even closed
    ],
    ids=["array", "object-in-field", "unclosed"],
)
async def test_deeply_nested_json_is_400_saying_so(client: Client, body: bytes) -> None:
    r = await client.post("/api/v1/channels", data=body, headers=JSON)
    assert r.status_code == 400
    error = (await r.get_json())["error"]
    assert error["code"] == "bad_request"
    assert error["message"] == "malformed request: the JSON body is nested too deeply"


async def test_a_message_body_nested_too_deeply_is_400(client: Client) -> None:
    channel = await client.post("/api/v1/channels", json={"name": "deep"}, headers=bearer())
    cid = (await channel.get_json())["id"]
    body = b'{"body": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    r = await client.post(f"/api/v1/channels/{cid}/messages", data=body, headers=JSON)
    assert r.status_code == 400
    assert "nested too deeply" in (await r.get_json())["error"]["message"]


async def test_invalid_json_says_where(client: Client) -> None:
    r = await client.post("/api/v1/channels", data=b'{"name": }', headers=JSON)
    assert r.status_code == 400
    message = (await r.get_json())["error"]["message"]
    assert (
        message == "malformed request: the body is not valid JSON (Expecting value at position 9)"
    )


async def test_moderately_nested_json_is_still_validated(client: Client) -> None:
    body = b'{"name": "ok", "topic": ' + b"[" * 50 + b"]" * 50 + b"}"
    r = await client.post("/api/v1/channels", data=body, headers=JSON)
    assert r.status_code == 422
    assert (await r.get_json())["error"]["fields"][0]["field"] == "topic"


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/channels/%D9%A1",  # ARABIC-INDIC DIGIT ONE
        "/api/v1/channels/%EF%BC%91",  # FULLWIDTH DIGIT ONE
        "/api/v1/channels/%E0%A5%A7/messages",  # DEVANAGARI DIGIT ONE
        "/api/v1/channels/1/messages/%F0%9D%9F%99",  # MATHEMATICAL DOUBLE-STRUCK DIGIT ONE
        "/api/v1/channels/%C2%B9",  # SUPERSCRIPT ONE
    ],
)
async def test_non_ascii_digits_in_path_ids_are_404(client: Client, path: str) -> None:
    created = await client.post("/api/v1/channels", json={"name": "one"}, headers=bearer())
    assert (await created.get_json())["id"] == 1
    await client.post("/api/v1/channels/1/messages", json={"body": "hi"}, headers=bearer())
    assert (await client.get("/api/v1/channels/1")).status_code == 200
    assert (await client.get("/api/v1/channels/1/messages/1")).status_code == 200
    r = await client.get(path)
    assert r.status_code == 404
    assert (await r.get_json())["error"] == {"code": "not_found", "message": "no such resource"}


async def test_openapi_still_documents_ids_as_integers(client: Client) -> None:
    doc = await (await client.get("/openapi.json")).get_json()
    params = doc["paths"]["/api/v1/channels/{channel_id}"]["get"]["parameters"]
    assert params[0]["schema"] == {"type": "integer", "minimum": 0, "maximum": 2**63 - 1}


async def test_nesting_is_refused_even_with_a_raised_recursion_limit(client: Client) -> None:
    """web3's py_ecc raises the interpreter's recursion limit to 100000 on import; the C JSON
    parser's own guard is that limit, so a deep body then overflowed the C stack and killed
    the process (a segfault, seen in this suite). The depth is checked before parsing."""
    before = sys.getrecursionlimit()
    sys.setrecursionlimit(100_000)
    try:
        body = b"[" * 200_000 + b"]" * 200_000
        r = await client.post("/api/v1/channels", data=body, headers=JSON)
    finally:
        sys.setrecursionlimit(before)
    assert r.status_code == 400
    assert "nested too deeply" in (await r.get_json())["error"]["message"]


@pytest.mark.parametrize(
    ("text", "deep"),
    [
        (b"[1, 2]", False),
        (b"[" * MAX_JSON_DEPTH + b"]" * MAX_JSON_DEPTH, False),
        (b"[" * (MAX_JSON_DEPTH + 1) + b"]" * (MAX_JSON_DEPTH + 1), True),
        (b'{"a":' * (MAX_JSON_DEPTH + 1) + b"1" + b"}" * (MAX_JSON_DEPTH + 1), True),
        (b"[" * 10_000, True),  # unclosed still counts
        (json.dumps({"s": "[" * 10_000}).encode(), False),  # brackets in a string
        (json.dumps({"s": '\\"' + "[" * 10_000}).encode(), False),  # after an escaped quote
        (b"[" + b"[1]," * 10_000 + b"[1]]", False),  # many brackets, shallow
    ],
    ids=["flat", "at-limit", "past-limit", "objects", "unclosed", "string", "escaped", "wide"],
)
def test_json_depth(text: bytes, deep: bool) -> None:
    assert json_too_deep(text) is deep
