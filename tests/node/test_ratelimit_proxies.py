"""Rate limiting behind an Ingress: the client address comes from X-Forwarded-For only when
the TCP peer is a trusted proxy (``security.trusted_proxies``, ``trusted_proxy_hops``);
IPv6 clients share a budget per /64; writes are limited per user (token ``sub``) too."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from quart.typing import TestClientProtocol as Client

from dchat_node.app import create_api_app
from dchat_node.config import ConfigError, parse_config
from dchat_node.security.ratelimit import ClientKeys, address_key
from dchat_node.services import build_services
from dchat_node.storage import open_storage
from tests.node.conftest import bearer, config_for, make_token

pytestmark = pytest.mark.unit

LIST = "/api/v1/channels"
RATE = 5

MakeClient = Callable[..., Any]


@pytest.fixture
async def make_client(tmp_path: Path) -> AsyncIterator[MakeClient]:
    opened: list[Any] = []

    async def make(**security: Any) -> Client:
        cfg = config_for(
            tmp_path / str(len(opened)),
            security={"rate_limit_requests_per_sec": RATE, **security},
        )
        storage = await open_storage(cfg.database)
        await storage.migrate()
        opened.append(storage)
        return create_api_app(build_services(cfg, storage)).test_client()

    yield make
    for storage in opened:
        await storage.close()


async def get(client: Client, peer: str, xff: str | None = None) -> int:
    headers = {"X-Forwarded-For": xff} if xff is not None else {}
    r = await client.get(LIST, headers=headers, scope_base={"client": (peer, 40000)})
    return r.status_code


async def spend(client: Client, peer: str, xff: str | None = None) -> None:
    """Use up one client's budget on LIST."""
    for _ in range(RATE):
        assert await get(client, peer, xff) == 200


async def test_spoofed_xff_from_an_untrusted_peer_is_ignored(make_client: MakeClient) -> None:
    client = await make_client(trusted_proxies=["10.0.0.0/8"])
    for i in range(RATE):  # a new forged address each time: still one budget, the peer's
        assert await get(client, "192.0.2.7", f"203.0.113.{i}") == 200
    assert await get(client, "192.0.2.7", "198.51.100.99") == 429
    assert await get(client, "192.0.2.8", "203.0.113.0") == 200  # another peer


async def test_xff_ignored_when_no_proxy_is_trusted(make_client: MakeClient) -> None:
    client = await make_client()
    await spend(client, "10.1.2.3", "203.0.113.1")
    assert await get(client, "10.1.2.3", "203.0.113.2") == 429


async def test_a_trusted_proxy_forwards_each_clients_address(make_client: MakeClient) -> None:
    client = await make_client(trusted_proxies=["10.0.0.0/8", "fd00::/8"])
    await spend(client, "10.1.2.3", "203.0.113.1")
    assert await get(client, "10.1.2.3", "203.0.113.1") == 429
    # another client behind the same proxy has its own budget
    assert await get(client, "10.9.9.9", "203.0.113.2") == 200
    # entries left of the proxy's own are the client's to forge: ignored (hops = 1)
    assert await get(client, "10.1.2.3", "198.51.100.1, 203.0.113.1") == 429
    # a trusted IPv6 proxy too
    assert await get(client, "fd00::5", "203.0.113.1") == 429


async def test_hop_count_picks_the_entry_the_outermost_trusted_proxy_wrote(
    make_client: MakeClient,
) -> None:
    client = await make_client(trusted_proxies=["10.0.0.0/8"], trusted_proxy_hops=2)
    # client-forged, real client (written by the load balancer), load balancer (by ingress)
    for forged in range(RATE):
        assert await get(client, "10.0.0.2", f"192.0.2.{forged}, 203.0.113.5, 10.0.0.1") == 200
    assert await get(client, "10.0.0.2", "203.0.113.5, 10.0.0.1") == 429
    assert await get(client, "10.0.0.2", "203.0.113.6, 10.0.0.1") == 200


async def test_ipv6_clients_in_one_64_share_a_budget(make_client: MakeClient) -> None:
    client = await make_client(trusted_proxies=["10.0.0.0/8"])
    for i in range(RATE):
        assert await get(client, f"2001:db8:1:2::{i + 1:x}") == 200
    assert await get(client, "2001:db8:1:2:ffff:ffff:ffff:ffff") == 429
    assert await get(client, "2001:db8:1:3::1") == 200  # the next /64
    # the same through a trusted proxy's X-Forwarded-For
    assert await get(client, "10.0.0.1", "2001:db8:1:2::abcd") == 429
    assert await get(client, "10.0.0.1", "[2001:db8:1:4::1]:443") == 200


async def test_two_users_from_one_address_have_separate_write_budgets(
    make_client: MakeClient,
) -> None:
    client = await make_client(
        rate_limit_requests_per_sec=1000, rate_limit_writes_per_user_per_sec=2
    )
    peer = {"scope_base": {"client": ("192.0.2.50", 1)}}

    async def create(user: str, name: str) -> Any:
        return await client.post(
            LIST, json={"name": name}, headers=bearer(make_token(user)), **peer
        )

    assert (await create("alice", "a1")).status_code == 201
    assert (await create("alice", "a2")).status_code == 201
    refused = await create("alice", "a3")
    assert refused.status_code == 429
    assert int(refused.headers["Retry-After"]) >= 1
    assert (await refused.get_json())["error"]["code"] == "rate_limited"
    # bob writes from the same address: his own budget
    assert (await create("bob", "b1")).status_code == 201
    assert (await create("bob", "b2")).status_code == 201
    # the budget covers writes on every route, not reads
    r = await client.post(
        "/api/v1/channels/1/messages",
        json={"body": "x"},
        headers=bearer(make_token("alice")),
        **peer,
    )
    assert r.status_code == 429
    assert (await client.get(LIST, **peer)).status_code == 200
    # a token that fails verification does not spend anybody's budget
    bad = await client.post(
        LIST, json={"name": "c"}, headers=bearer(make_token("carol", secret="x" * 40)), **peer
    )
    assert bad.status_code == 401
    assert (await create("carol", "c1")).status_code == 201


async def test_no_user_limit_when_rate_limiting_is_off(make_client: MakeClient) -> None:
    client = await make_client(rate_limit_enabled=False, rate_limit_writes_per_user_per_sec=1)
    for i in range(3):
        r = await client.post(LIST, json={"name": f"n{i}"}, headers=bearer())
        assert r.status_code == 201


@pytest.mark.parametrize(
    ("address", "key"),
    [
        ("192.0.2.1", "192.0.2.1"),
        ("192.0.2.1:8080", "192.0.2.1"),
        ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"),
        ("[2001:db8:1:2::9]:443", "2001:db8:1:2::/64"),
        ("::ffff:192.0.2.1", "192.0.2.1"),
        ("not-an-address", None),
        ("", None),
    ],
)
def test_address_keys(address: str, key: str | None) -> None:
    assert address_key(address) == key


def test_client_keys_fall_back_to_the_peer() -> None:
    keys = ClientKeys(["10.0.0.0/8"], 1)
    assert keys.key_of("10.0.0.1", ["garbage"]) == "10.0.0.1"
    assert keys.key_of("10.0.0.1", [" , "]) == "10.0.0.1"
    assert keys.key_of("10.0.0.1", []) == "10.0.0.1"
    assert keys.key_of(None, ["203.0.113.1"]) == "unknown"
    assert ClientKeys(["10.0.0.0/8"], 3).key_of("10.0.0.1", ["203.0.113.1"]) == "203.0.113.1"


@pytest.mark.parametrize(
    ("env", "key"),
    [
        ({"DCHAT_SECURITY__TRUSTED_PROXIES": "10.0.0.0/8,not-a-cidr"}, "security.trusted_proxies"),
        ({"DCHAT_SECURITY__TRUSTED_PROXY_HOPS": "0"}, "security.trusted_proxy_hops"),
        ({"DCHAT_SECURITY__TRUSTED_PROXY_HOPS": "17"}, "security.trusted_proxy_hops"),
        (
            {"DCHAT_SECURITY__RATE_LIMIT_WRITES_PER_USER_PER_SEC": "0"},
            "security.rate_limit_writes_per_user_per_sec",
        ),
    ],
)
def test_new_keys_are_validated(env: dict[str, str], key: str) -> None:
    with pytest.raises(ConfigError) as exc:
        parse_config({}, environ=env)
    (problem,) = exc.value.problems
    assert problem.key == key
    assert problem.source in env
    if key == "security.trusted_proxies":
        assert "'not-a-cidr' is not an IP network" in problem.message


def test_new_keys_from_the_environment() -> None:
    c = parse_config(
        {},
        environ={
            "DCHAT_SECURITY__TRUSTED_PROXIES": "10.0.0.0/8, fd00::/8",
            "DCHAT_SECURITY__TRUSTED_PROXY_HOPS": "2",
            "DCHAT_SECURITY__RATE_LIMIT_WRITES_PER_USER_PER_SEC": "7",
        },
    )
    assert c.security.trusted_proxies == ["10.0.0.0/8", "fd00::/8"]
    assert c.security.trusted_proxy_hops == 2
    assert c.security.rate_limit_writes_per_user_per_sec == 7
    defaults = parse_config({}, environ={}).security
    assert (defaults.trusted_proxies, defaults.trusted_proxy_hops) == ([], 1)
    assert defaults.rate_limit_writes_per_user_per_sec == 20
