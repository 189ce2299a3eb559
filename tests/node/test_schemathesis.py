"""Property-based API testing: schemathesis against /openapi.json of a real node, with and
without a valid token. No generated request may produce a 5xx. Every documented route is
exercised: chat, meta and accessibility (contrast, shortcuts, preferences)."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.node.conftest import PYTHON, make_token

pytestmark = pytest.mark.integration

SCHEMATHESIS = str(Path(PYTHON).parent / "schemathesis")
MARKET_NODE = [PYTHON, str(Path(__file__).with_name("market_node.py"))]


@pytest.mark.parametrize("authenticated", [True, False], ids=["with-token", "anonymous"])
def test_schemathesis_finds_no_server_errors(
    start_node: Any, tmp_path: Path, authenticated: bool
) -> None:
    # the marketplace routes too: a node with payments configured (its verifier reaches no
    # chain; see market_node.py), and a token with the marketplace scopes
    node = start_node(
        argv=MARKET_NODE,
        env={
            "DCHAT_SECURITY__RATE_LIMIT_ENABLED": "false",
            "DCHAT_MARKETPLACE__ESCROW_ADDRESS": "0x" + "22" * 20,
            "DCHAT_MARKETPLACE__CHAIN_ID": "31337",
        },
    )
    node.wait_ready()
    # some real data so GETs by id also hit existing rows
    token = make_token(expires_in=3600, scope="chat:write marketplace:write marketplace:arbiter")
    seller = make_token("seller", expires_in=3600, scope="marketplace:write")
    with httpx.Client(base_url=node.api, headers={"Authorization": f"Bearer {token}"}) as c:
        cid = c.post("/api/v1/channels", json={"name": "seed"}).json()["id"]
        c.post(f"/api/v1/channels/{cid}/messages", json={"body": "seed"})
        c.put("/api/v1/accessibility/preferences", json={"font_scale": 1.5}).raise_for_status()
        listing = c.post(
            "/api/v1/marketplace/listings",
            json={"title": "seed", "price": "1", "payout_address": "0x" + "11" * 20},
            headers={"Authorization": f"Bearer {seller}"},
        )
        assert listing.status_code == 201, listing.text
        bought = c.post("/api/v1/marketplace/purchases", json={"listing_id": listing.json()["id"]})
        assert bought.status_code == 201, bought.text
    args = [
        SCHEMATHESIS,
        "run",
        f"{node.api}/openapi.json",
        "--checks",
        "not_a_server_error,content_type_conformance,response_schema_conformance",
        "--max-examples",
        "40",
        "--seed",
        "20261126",
        "--generation-database",
        "none",
        "--phases",
        "examples,coverage,fuzzing",
        "--request-timeout",
        "10",
    ]
    if authenticated:
        args += ["--header", f"Authorization: Bearer {token}"]
    r = subprocess.run(args, capture_output=True, text=True, timeout=110, cwd=tmp_path)
    assert r.returncode == 0, r.stdout[-6000:] + r.stderr[-2000:]
    assert "No issues found" in r.stdout or "passed" in r.stdout.lower()
    metrics = httpx.get(f"{node.ops}/metrics").text
    assert 'status="5' not in metrics  # the server saw no 5xx at all
    assert node.stop() == 0
