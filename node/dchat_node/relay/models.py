"""Pydantic models of the relay API (request bodies and responses; they generate its part
of ``/openapi.json``). Shapes and bounds live here (422 naming the field); the checks that
depend on configuration or cryptography (size limit -> 413, ttl, clock skew, signatures)
are the service's."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, StringConstraints

from dchat_node.api.models import RequestModel, ResponseModel

B64_PATTERN = r"^[A-Za-z0-9+/]*={0,2}$"
KEY_B64 = Annotated[
    str,
    StringConstraints(min_length=44, max_length=44, pattern=B64_PATTERN),
]
SIG_B64 = Annotated[
    str,
    StringConstraints(min_length=88, max_length=88, pattern=B64_PATTERN),
]
# the hard ceiling of any configuration (relay.max_envelope_bytes <= 512 KiB); the
# configured limit is checked by the service (413)
CIPHERTEXT_B64 = Annotated[
    str,
    StringConstraints(min_length=4, max_length=4 * ((524288 * 2 + 2) // 3), pattern=B64_PATTERN),
]
ENVELOPE_ID = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]


class EnvelopeIn(RequestModel):
    recipient: KEY_B64 = Field(description="Recipient's Ed25519 public key (base64, 32 bytes).")
    sender: KEY_B64 = Field(description="Sender's Ed25519 public key (base64, 32 bytes).")
    ciphertext: CIPHERTEXT_B64 = Field(
        description="End-to-end encrypted payload (base64); the node never decrypts it."
    )
    created_at: int = Field(ge=0, lt=2**53, description="Unix seconds, sender's clock.")
    ttl_secs: int = Field(ge=1, lt=2**31, description="Lifetime from created_at, seconds.")
    signature: SIG_B64 = Field(
        description=(
            "Ed25519 signature by sender over 'dchat-relay-envelope-v1\\0' || recipient || "
            "sender || created_at (u64 BE) || ttl_secs (u32 BE) || SHA-256(ciphertext)."
        )
    )


class PostResult(ResponseModel):
    id: str = Field(description="Envelope id: hex SHA-256 of the signed bytes.")
    expires_at: int
    duplicate: bool = Field(description="The node already held this envelope.")
    gossiped: bool = Field(description="Handed to the P2P network for the other nodes.")


class ChallengeIn(RequestModel):
    recipient: KEY_B64


class ChallengeOut(ResponseModel):
    challenge: str = Field(description="32 random bytes (base64); single use.")
    expires_at: int = Field(description="Unix seconds after which the challenge is refused.")


class FetchIn(RequestModel):
    recipient: KEY_B64
    challenge: str = Field(min_length=44, max_length=44, pattern=B64_PATTERN)
    signature: SIG_B64 = Field(
        description=(
            "Ed25519 signature by recipient over 'dchat-relay-fetch-v1\\0' || challenge || "
            "recipient."
        )
    )
    after: int = Field(0, ge=0, lt=2**63, description="Return envelopes after this cursor.")
    limit: int = Field(100, ge=1, le=500)


class EnvelopeOut(ResponseModel):
    id: str
    recipient: str
    sender: str
    ciphertext: str
    created_at: int
    ttl_secs: int
    expires_at: int
    signature: str


class EnvelopePage(ResponseModel):
    envelopes: list[EnvelopeOut]
    next_after: int = Field(description="Cursor for the next fetch (this node's order).")


class P2PInfo(ResponseModel):
    peerId: str
    addrs: list[str]
