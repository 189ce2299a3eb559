"""The bridge's gossip: what travels on the pubsub topic, and the pubsub it needs.

Design:
- Transport: the node's ``dchat_node.p2p.pubsub.PubSub`` (GossipSub on the libp2p host the
  server builds and hands in; ``LocalPubSub`` in unit tests). Its subscriptions are bounded:
  a lost attestation is harmless because validators rebroadcast while a transfer is open.
- Three messages, JSON, at most ``MAX_MESSAGE_BYTES``: an ``Attestation`` (a validator's
  signature over a release or refund digest), a ``Heartbeat`` (a validator's signed
  timestamp, so health can say which validators are reachable) and a ``SnapshotSignature``
  (a validator's EIP-191 signature over a state snapshot's hash, with the snapshot header).
  Nothing in a message is trusted: the receiver recovers the signer from the digest and the
  signature and drops it unless the signer is a registered validator; an aggregator counts a
  signature only if its digest equals the digest it derived itself from the source chain's
  Deposit log, and keeps a snapshot only after re-deriving its root from its own store.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from dchat_node.p2p.pubsub import PubSub

__all__ = [
    "MAX_MESSAGE_BYTES",
    "Attestation",
    "Heartbeat",
    "Message",
    "PubSub",
    "SnapshotCut",
    "SnapshotSignature",
    "decode",
    "encode",
]

MAX_MESSAGE_BYTES = 2048
HEX32 = r"^0x[0-9a-f]{64}$"
ADDRESS = r"^0x[0-9a-fA-F]{40}$"
SIG = r"^0x[0-9a-f]{130}$"


class _Wire(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Attestation(_Wire):
    type: Literal["attestation"] = "attestation"
    kind: Literal["release", "refund"]
    transfer_id: Annotated[str, Field(pattern=HEX32)]
    digest: Annotated[str, Field(pattern=HEX32)]
    signer: Annotated[str, Field(pattern=ADDRESS)]
    signature: Annotated[str, Field(pattern=SIG)]


class Heartbeat(_Wire):
    type: Literal["heartbeat"] = "heartbeat"
    signer: Annotated[str, Field(pattern=ADDRESS)]
    time: int = Field(ge=0)
    signature: Annotated[str, Field(pattern=SIG)]


class SnapshotCut(_Wire):
    chain_id: int = Field(ge=1, lt=2**256)
    vault: Annotated[str, Field(pattern=ADDRESS)]
    next_nonce: int = Field(ge=0, lt=2**256)


class SnapshotSignature(_Wire):
    """A validator's signature over a snapshot, with the snapshot's header so a receiver can
    recompute the hash and re-derive the root from its own store before keeping it."""

    type: Literal["snapshot"] = "snapshot"
    seq: int = Field(ge=1, lt=2**63)
    root: Annotated[str, Field(pattern=HEX32)]
    prev_hash: Annotated[str, Field(pattern=HEX32)]
    leaf_count: int = Field(ge=0, lt=2**63)
    cut: Annotated[list[SnapshotCut], Field(min_length=2, max_length=2)]
    signer: Annotated[str, Field(pattern=ADDRESS)]
    signature: Annotated[str, Field(pattern=SIG)]


Message = Attestation | Heartbeat | SnapshotSignature
WireMessage = Annotated[Message, Field(discriminator="type")]
WIRE: TypeAdapter[Message] = TypeAdapter(WireMessage)


def encode(message: Message) -> bytes:
    return message.model_dump_json().encode()


def decode(data: bytes) -> Message:
    """ValueError (pydantic's ValidationError is one) on anything malformed or too big."""
    if len(data) > MAX_MESSAGE_BYTES:
        raise ValueError(f"message of {len(data)} bytes (at most {MAX_MESSAGE_BYTES})")
    return WIRE.validate_json(data)
