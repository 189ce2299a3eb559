"""A relay client for tests and bench/relay.py: Ed25519 keys, signed envelopes, the
challenge-signed fetch (what a real client does; the ciphertext is random bytes standing
for an end-to-end encrypted payload the node cannot read)."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from dchat_node.relay.envelope import b64encode, fetch_signing_bytes, signing_bytes


@dataclass
class Keys:
    private: Ed25519PrivateKey
    public: bytes

    @classmethod
    def new(cls) -> Keys:
        priv = Ed25519PrivateKey.generate()
        return cls(priv, priv.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw))

    @property
    def b64(self) -> str:
        return b64encode(self.public)


def envelope(
    sender: Keys,
    recipient: Keys,
    ciphertext: bytes | None = None,
    *,
    ttl_secs: int = 600,
    created_at: int | None = None,
) -> dict[str, Any]:
    body = ciphertext if ciphertext is not None else os.urandom(64)
    created = int(time.time()) if created_at is None else created_at
    sig = sender.private.sign(
        signing_bytes(recipient.public, sender.public, created, ttl_secs, body)
    )
    return {
        "recipient": recipient.b64,
        "sender": sender.b64,
        "ciphertext": b64encode(body),
        "created_at": created,
        "ttl_secs": ttl_secs,
        "signature": b64encode(sig),
    }


def challenge(client: httpx.Client, base: str, recipient: Keys) -> str:
    r = client.post(f"{base}/api/v1/relay/challenges", json={"recipient": recipient.b64})
    assert r.status_code == 201, r.text
    value: str = r.json()["challenge"]
    return value


def proof(recipient: Keys, challenge_b64: str) -> str:
    import base64

    raw = base64.b64decode(challenge_b64)
    return b64encode(recipient.private.sign(fetch_signing_bytes(raw, recipient.public)))


def fetch_all(client: httpx.Client, base: str, recipient: Keys) -> list[dict[str, Any]]:
    """Every envelope the node holds for ``recipient`` (one challenge per page)."""
    out: list[dict[str, Any]] = []
    after = 0
    while True:
        ch = challenge(client, base, recipient)
        r = client.post(
            f"{base}/api/v1/relay/envelopes/fetch",
            json={
                "recipient": recipient.b64,
                "challenge": ch,
                "signature": proof(recipient, ch),
                "after": after,
                "limit": 500,
            },
        )
        assert r.status_code == 200, r.text
        page = r.json()
        out.extend(page["envelopes"])
        if not page["envelopes"]:
            return out
        after = page["next_after"]
