"""The signed envelope format and its checks (pure functions, no I/O).

An envelope is ``recipient`` (Ed25519 public key, 32 bytes), ``sender`` (Ed25519 public
key), ``ciphertext`` (opaque bytes the node never decrypts), ``created_at`` (Unix seconds,
the sender's clock), ``ttl_secs`` and ``signature`` (Ed25519 by ``sender``). Binary fields
travel as standard base64 with padding.

The sender signs ``ENVELOPE_CONTEXT || recipient || sender || created_at (8 bytes, big
endian) || ttl_secs (4 bytes, big endian) || SHA-256(ciphertext)``. The envelope id is the
SHA-256 (hex) of those same bytes: the same envelope has the same id on every node
(dedupe), and a different signature over the same content does not make a new one.

A recipient proves its key to fetch or subscribe by signing ``FETCH_CONTEXT || challenge
(32 bytes) || recipient`` for a challenge the node issued (single use, short ttl).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

ENVELOPE_CONTEXT = b"dchat-relay-envelope-v1\x00"
FETCH_CONTEXT = b"dchat-relay-fetch-v1\x00"
KEY_BYTES = 32
SIGNATURE_BYTES = 64
CHALLENGE_BYTES = 32


class EnvelopeError(ValueError):
    """An envelope (or a fetch proof) is malformed or does not verify; ``field`` names it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def b64decode(value: str, field: str, *, size: int | None = None) -> bytes:
    try:
        raw = base64.b64decode(value.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise EnvelopeError(field, "not valid base64") from None
    if size is not None and len(raw) != size:
        raise EnvelopeError(field, f"must decode to {size} bytes (got {len(raw)})")
    return raw


def b64encode(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def max_b64_len(raw_bytes: int) -> int:
    """Length of the base64 text of ``raw_bytes`` bytes (with padding)."""
    return 4 * ((raw_bytes + 2) // 3)


@dataclass(frozen=True, slots=True)
class Envelope:
    recipient: bytes
    sender: bytes
    ciphertext: bytes
    created_at: int
    ttl_secs: int
    signature: bytes

    @property
    def expires_at(self) -> int:
        return self.created_at + self.ttl_secs

    def signing_bytes(self) -> bytes:
        return signing_bytes(
            self.recipient, self.sender, self.created_at, self.ttl_secs, self.ciphertext
        )

    @property
    def id(self) -> str:
        return hashlib.sha256(self.signing_bytes()).hexdigest()

    def verify(self) -> None:
        """Raise ``EnvelopeError`` unless ``signature`` is the sender's over the content."""
        try:
            Ed25519PublicKey.from_public_bytes(self.sender).verify(
                self.signature, self.signing_bytes()
            )
        except (InvalidSignature, ValueError):
            raise EnvelopeError("signature", "does not verify with the sender key") from None


def signing_bytes(
    recipient: bytes, sender: bytes, created_at: int, ttl_secs: int, ciphertext: bytes
) -> bytes:
    if not 0 <= created_at < 2**63 or not 0 < ttl_secs < 2**32:
        raise EnvelopeError("created_at", "created_at or ttl_secs out of range")
    return b"".join(
        (
            ENVELOPE_CONTEXT,
            recipient,
            sender,
            created_at.to_bytes(8, "big"),
            ttl_secs.to_bytes(4, "big"),
            hashlib.sha256(ciphertext).digest(),
        )
    )


def parse_envelope(
    *,
    recipient: str,
    sender: str,
    ciphertext: str,
    created_at: int,
    ttl_secs: int,
    signature: str,
) -> Envelope:
    """Decode the wire fields (no signature check: ``Envelope.verify``)."""
    return Envelope(
        recipient=b64decode(recipient, "recipient", size=KEY_BYTES),
        sender=b64decode(sender, "sender", size=KEY_BYTES),
        ciphertext=b64decode(ciphertext, "ciphertext"),
        created_at=created_at,
        ttl_secs=ttl_secs,
        signature=b64decode(signature, "signature", size=SIGNATURE_BYTES),
    )


def fetch_signing_bytes(challenge: bytes, recipient: bytes) -> bytes:
    return FETCH_CONTEXT + challenge + recipient


def verify_fetch(recipient: bytes, challenge: bytes, signature: bytes) -> None:
    """Raise ``EnvelopeError`` unless ``signature`` is the recipient's over the challenge."""
    try:
        Ed25519PublicKey.from_public_bytes(recipient).verify(
            signature, fetch_signing_bytes(challenge, recipient)
        )
    except (InvalidSignature, ValueError):
        raise EnvelopeError(
            "signature", "does not verify with the recipient key for this challenge"
        ) from None
