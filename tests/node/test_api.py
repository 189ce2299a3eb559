"""The API app in-process: chat routes, validation errors, JSON errors, OpenAPI."""

from __future__ import annotations

from typing import Any

import pytest
from quart.typing import TestClientProtocol as Client

from dchat_node.api.models import encode_cursor
from dchat_node.storage.migrations import load_migrations
from tests.node.conftest import bearer, make_token

pytestmark = pytest.mark.unit


async def create_channel(client: Client, name: str = "general") -> dict[str, Any]:
    r = await client.post("/api/v1/channels", json={"name": name, "topic": "t"}, headers=bearer())
    assert r.status_code == 201, await r.get_data(as_text=True)
    body: dict[str, Any] = await r.get_json()
    return body


async def test_version(client: Client) -> None:
    r = await client.get("/api/v1/version")
    assert r.status_code == 200
    body = await r.get_json()
    assert body["api"] == "v1"
    assert body["storage_engine"] == "sqlite"
    assert body["schema_version"] == load_migrations("sqlite")[-1].version


async def test_channel_lifecycle(client: Client) -> None:
    ch = await create_channel(client)
    assert ch["name"] == "general"
    assert ch["created_by"] == "alice"
    r = await client.get(f"/api/v1/channels/{ch['id']}")
    assert r.status_code == 200
    assert (await r.get_json()) == ch
    r = await client.post("/api/v1/channels", json={"name": "general"}, headers=bearer())
    assert r.status_code == 409
    assert (await r.get_json())["error"]["code"] == "conflict"
    r = await client.get("/api/v1/channels")
    assert [c["name"] for c in (await r.get_json())["items"]] == ["general"]


async def test_messages_post_get_and_cursor_pagination(client: Client) -> None:
    ch = await create_channel(client)
    base = f"/api/v1/channels/{ch['id']}/messages"
    ids = []
    for i in range(5):
        r = await client.post(base, json={"body": f"hello {i}"}, headers=bearer(make_token("bob")))
        assert r.status_code == 201
        msg = await r.get_json()
        assert msg["author"] == "bob"
        assert msg["channel_id"] == ch["id"]
        ids.append(msg["id"])
    r = await client.get(f"{base}/{ids[3]}")
    assert r.status_code == 200
    assert (await r.get_json())["body"] == "hello 3"
    seen: list[str] = []
    url = f"{base}?limit=2"
    pages = 0
    while url:
        page = await (await client.get(url)).get_json()
        seen += [m["body"] for m in page["items"]]
        pages += 1
        url = f"{base}?limit=2&cursor={page['next_cursor']}" if page["next_cursor"] else ""
    assert seen == [f"hello {i}" for i in range(5)]
    assert pages == 3


async def test_missing_things_are_404_json(client: Client) -> None:
    for path in (
        "/api/v1/channels/424242",
        "/api/v1/channels/424242/messages",
        "/api/v1/channels/1/messages/5",
        "/no/such/route",
        "/api/v1/channels/not-a-number",
    ):
        r = await client.get(path)
        assert r.status_code == 404, path
        assert (await r.get_json())["error"]["code"] == "not_found"
    r = await client.post("/api/v1/channels/424242/messages", json={"body": "x"}, headers=bearer())
    assert r.status_code == 404


async def test_method_not_allowed_is_json(client: Client) -> None:
    r = await client.delete("/api/v1/version")
    assert r.status_code == 405
    assert "GET" in r.headers["Allow"]
    assert (await r.get_json())["error"]["code"] == "method_not_allowed"


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({}, "name"),
        ({"name": ""}, "name"),
        ({"name": "Has Spaces"}, "name"),
        ({"name": "x" * 65}, "name"),
        ({"name": "ok", "topic": 5}, "topic"),
        ({"name": "ok", "extra": 1}, "extra"),
        ({"name": "nul\x00"}, "name"),
        ([1, 2], "<body>"),
    ],
)
async def test_bad_bodies_say_which_field(client: Client, payload: Any, field: str) -> None:
    r = await client.post("/api/v1/channels", json=payload, headers=bearer())
    assert r.status_code == 422
    body = await r.get_json()
    assert body["error"]["code"] == "validation_failed"
    assert field in [f["field"] for f in body["error"]["fields"]], body


async def test_bad_query_strings(client: Client) -> None:
    ch = await create_channel(client)
    base = f"/api/v1/channels/{ch['id']}/messages"
    for qs, field in (("limit=0", "limit"), ("limit=abc", "limit"), ("cursor=%%%", "cursor")):
        r = await client.get(f"{base}?{qs}")
        assert r.status_code == 422, qs
        assert field in [f["field"] for f in (await r.get_json())["error"]["fields"]]
    forged = encode_cursor(2**64)
    r = await client.get(f"{base}?cursor={forged}")
    assert r.status_code == 422


async def test_malformed_json_is_400(client: Client) -> None:
    r = await client.post(
        "/api/v1/channels",
        data=b"{not json",
        headers={**bearer(), "Content-Type": "application/json"},
    )
    assert r.status_code in (400, 422)
    assert "error" in await r.get_json()


async def test_non_utf8_body_is_400_not_500(client: Client) -> None:
    # found by schemathesis: Quart decodes the body as UTF-8 before JSON parsing
    r = await client.post(
        "/api/v1/channels",
        data=b"\xff\xfe\x05\\0\xfa;z",
        headers={**bearer(), "Content-Type": "application/json"},
    )
    assert r.status_code == 400
    assert "UTF-8" in (await r.get_json())["error"]["message"]


async def test_body_cap_is_413(client: Client, node_config: Any) -> None:
    ch = await create_channel(client)
    big = "x" * (node_config.server.max_request_body_bytes + 10)
    r = await client.post(
        f"/api/v1/channels/{ch['id']}/messages", json={"body": big}, headers=bearer()
    )
    assert r.status_code == 413
    assert (await r.get_json())["error"]["code"] == "payload_too_large"


async def test_openapi_documents_every_route_with_models(client: Client) -> None:
    r = await client.get("/openapi.json")
    assert r.status_code == 200
    doc = await r.get_json()
    paths = doc["paths"]
    assert set(paths) >= {
        "/api/v1/version",
        "/api/v1/channels",
        "/api/v1/channels/{channel_id}",
        "/api/v1/channels/{channel_id}/messages",
        "/api/v1/channels/{channel_id}/messages/{message_id}",
    }
    create = paths["/api/v1/channels"]["post"]
    assert "requestBody" in create
    assert create["security"] == [{"bearerAuth": []}]
    post_msg = paths["/api/v1/channels/{channel_id}/messages"]["post"]
    assert "requestBody" in post_msg
    listing = paths["/api/v1/channels/{channel_id}/messages"]["get"]
    names = {p["name"] for p in listing["parameters"]}
    assert {"channel_id", "limit", "cursor"} <= names
    assert doc["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"


async def test_query_validator_matches_quart_schema_conversion(client: Client) -> None:
    """The prebuilt query validator: unknown, repeated and ``[]`` keys give clear 422s,
    valid ones pass (same input shape as quart-schema's own conversion)."""
    ch = await create_channel(client)
    base = f"/api/v1/channels/{ch['id']}/messages"
    cases = (
        ("limit=201", "limit"),
        ("limit=5&limit=6", "limit"),  # a repeated key becomes a list
        ("limit[]=5", "limit"),  # key[] is always a list
        ("colour=red", "colour"),  # unknown keys are refused (extra="forbid")
        ("cursor=" + "A" * 65, "cursor"),
    )
    for qs, field in cases:
        r = await client.get(f"{base}?{qs}")
        assert r.status_code == 422, qs
        err = (await r.get_json())["error"]
        assert err["code"] == "validation_failed", qs
        assert field in [f["field"] for f in err["fields"]], (qs, err)
    r = await client.get(f"{base}?limit=200")
    assert r.status_code == 200
    assert (await r.get_json())["next_cursor"] is None


def test_query_dict_shapes() -> None:
    from werkzeug.datastructures import MultiDict

    from dchat_node.api.validation import query_dict

    args = MultiDict([("a", "1"), ("a", "2"), ("b", "3"), ("c[]", "x")])
    assert query_dict(args) == {"a": ["1", "2"], "b": "3", "c": ["x"]}


async def test_openapi_still_documents_the_query_parameters(client: Client) -> None:
    doc = await (await client.get("/openapi.json")).get_json()
    for path in ("/api/v1/channels", "/api/v1/channels/{channel_id}/messages"):
        params = {p["name"]: p for p in doc["paths"][path]["get"]["parameters"]}
        assert {"limit", "cursor"} <= set(params), path
        assert params["limit"]["in"] == "query"
        assert params["limit"]["schema"]["maximum"] == 200


async def test_responses_are_sessionless(client: Client) -> None:
    ch = await create_channel(client)
    r = await client.get(f"/api/v1/channels/{ch['id']}/messages?limit=1")
    assert r.status_code == 200
    assert "Set-Cookie" not in r.headers
    assert r.content_type == "application/json"
