"""Pydantic models of the marketplace API (bodies, query strings, responses).

Amounts (prices, purchase amounts) are uint256 values in the currency's smallest unit (wei,
or the token's base unit): JSON carries them as decimal strings, since JSON numbers lose
precision past 2^53. Addresses are ``0x`` + 40 hex digits; mixed case must be a valid
EIP-55 checksum; responses always carry the checksummed form.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Literal, Self

from eth_utils.address import is_checksum_address, to_checksum_address
from pydantic import Field, field_validator

from dchat_node.api.models import RequestModel, ResponseModel, decode_cursor
from dchat_node.marketplace.store import EventRecord, ListingRecord, PurchaseRecord

MAX_UINT256 = 2**256 - 1
ADDRESS_PATTERN = r"^0x[0-9a-fA-F]{40}$"
TX_HASH_PATTERN = r"^0x[0-9a-fA-F]{64}$"
AMOUNT_PATTERN = r"^[0-9]{1,78}$"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def when(us: int | None) -> datetime | None:
    return None if us is None else _EPOCH + timedelta(microseconds=us)


def checksummed(value: str | None) -> str | None:
    """``value`` (already ``0x`` + 40 hex) in EIP-55 form; ValueError for a mixed-case
    address whose checksum is wrong (a typo the checksum exists to catch)."""
    if value is None:
        return None
    body = value[2:]
    if body != body.lower() and body != body.upper() and not is_checksum_address(value):
        raise ValueError("is not a valid EIP-55 checksummed address (check for a typo)")
    return to_checksum_address(value)


def _amount_before(value: object) -> object:
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if isinstance(value, str) and value.strip().startswith("-"):
        raise ValueError("must not be negative")
    return value


def _amount_after(value: str | None) -> str | None:
    if value is not None and int(value) > MAX_UINT256:
        raise ValueError("must fit in 256 bits")
    return None if value is None else str(int(value))


Amount = Field(
    pattern=AMOUNT_PATTERN,
    description="Non-negative integer in the smallest unit (wei or token base units), "
    "as a decimal string.",
    examples=["1000000000000000000"],
)


class _ListingBody(RequestModel):
    """The checks a listing body's fields share (create and update): amounts as uint256
    decimal strings, addresses checksummed."""

    @field_validator("price", mode="before", check_fields=False)
    @classmethod
    def _price_before(cls, value: object) -> object:
        return _amount_before(value)

    @field_validator("price", check_fields=False)
    @classmethod
    def _price_after(cls, value: str | None) -> str | None:
        return _amount_after(value)

    @field_validator("token", "payout_address", check_fields=False)
    @classmethod
    def _addresses(cls, value: str | None) -> str | None:
        return checksummed(value)


class CreateListing(_ListingBody):
    title: str = Field(min_length=1, max_length=200)
    description: str = Field("", max_length=5000)
    price: str = Amount
    token: str | None = Field(
        None,
        pattern=ADDRESS_PATTERN,
        description="ERC-20 contract the price is in; null: the chain's native coin.",
    )
    payout_address: str = Field(
        pattern=ADDRESS_PATTERN, description="Where released funds go (the creator's)."
    )
    inventory: int | None = Field(
        None, ge=0, le=2**62, description="Units for sale; null: unlimited."
    )
    status: Literal["active", "paused"] = "active"


class UpdateListing(_ListingBody):
    """Only the fields given change; ``inventory: null`` makes it unlimited."""

    title: str | None = Field(None, min_length=1, max_length=200)
    description: str | None = Field(None, max_length=5000)
    price: str | None = Field(None, pattern=AMOUNT_PATTERN, description=Amount.description)
    token: str | None = Field(None, pattern=ADDRESS_PATTERN)
    payout_address: str | None = Field(None, pattern=ADDRESS_PATTERN)
    inventory: int | None = Field(None, ge=0, le=2**62)
    status: Literal["active", "paused"] | None = None


class PageQuery(RequestModel):
    """A keyset page of any list (``limit``, ``cursor``); filtered lists extend it."""

    limit: int = Field(50, ge=1, le=200)
    cursor: str | None = Field(None, max_length=64, description="next_cursor of the last page.")

    @field_validator("cursor")
    @classmethod
    def _cursor(cls, value: str | None) -> str | None:
        if value is not None:
            decode_cursor(value)
        return value

    def after_id(self) -> int:
        return 0 if self.cursor is None else decode_cursor(self.cursor)


class ListingQuery(PageQuery):
    creator: str | None = Field(None, min_length=1, max_length=256)
    status: Literal["active", "paused", "delisted"] | None = None
    token: str | None = Field(
        None,
        pattern=r"^(native|0x[0-9a-fA-F]{40})$",
        description="Only listings priced in this token (an address), or `native`.",
    )
    min_price: str | None = Field(None, pattern=AMOUNT_PATTERN)
    max_price: str | None = Field(None, pattern=AMOUNT_PATTERN)
    q: str | None = Field(
        None, min_length=1, max_length=100, description="Text in the title or description."
    )

    @field_validator("min_price", "max_price", mode="before")
    @classmethod
    def _price_before(cls, value: object) -> object:
        return _amount_before(value)

    @field_validator("min_price", "max_price")
    @classmethod
    def _price_after(cls, value: str | None) -> str | None:
        return _amount_after(value)

    @field_validator("token")
    @classmethod
    def _token(cls, value: str | None) -> str | None:
        return value if value in (None, "native") else checksummed(value)


class Listing(ResponseModel):
    id: int
    creator: str
    title: str
    description: str
    price: str
    token: str | None
    payout_address: str
    inventory: int | None
    status: str
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, rec: ListingRecord) -> Self:
        return cls(
            id=rec.id,
            creator=rec.creator,
            title=rec.title,
            description=rec.description,
            price=str(rec.price),
            token=rec.token,
            payout_address=rec.payout_address,
            inventory=rec.inventory,
            status=rec.status,
            created_at=when(rec.created_at_us),
            updated_at=when(rec.updated_at_us),
        )


class ListingPage(ResponseModel):
    items: list[Listing]
    next_cursor: str | None


class CreatePurchase(RequestModel):
    listing_id: int = Field(ge=1, le=2**63 - 1)


class SubmitPayment(RequestModel):
    tx_hash: str = Field(
        pattern=TX_HASH_PATTERN,
        description="The transaction that pays this purchase (it carries the reference).",
    )


class OpenDispute(RequestModel):
    reason: str = Field(min_length=1, max_length=2000)


class Resolve(RequestModel):
    outcome: Literal["released", "refunded"]
    note: str = Field("", max_length=2000)


class Purchase(ResponseModel):
    id: int
    listing_id: int
    buyer: str
    creator: str
    payout_address: str
    state: str
    amount: str
    token: str | None
    chain_id: int
    pay_to: str = Field(description="The escrow address the payment goes to.")
    reference: str = Field(
        description="0x + 64 hex: the 32 bytes the payment transaction must carry (native "
        "coin: the transaction's data; ERC-20: appended to transfer(pay_to, amount))."
    )
    tx_hash: str | None
    payer: str | None
    block_number: int | None
    last_error: str | None
    expires_at: datetime
    confirmed_at: datetime | None
    delivered_at: datetime | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, rec: PurchaseRecord, reference: bytes) -> Self:
        return cls(
            id=rec.id,
            listing_id=rec.listing_id,
            buyer=rec.buyer,
            creator=rec.creator,
            payout_address=rec.payout_address,
            state=rec.state.value,
            amount=str(rec.amount),
            token=rec.token,
            chain_id=rec.chain_id,
            pay_to=rec.pay_to,
            reference="0x" + reference.hex(),
            tx_hash=rec.tx_hash,
            payer=rec.payer,
            block_number=rec.block_number,
            last_error=rec.last_error,
            expires_at=when(rec.expires_at_us),
            confirmed_at=when(rec.confirmed_at_us),
            delivered_at=when(rec.delivered_at_us),
            created_at=when(rec.created_at_us),
            updated_at=when(rec.updated_at_us),
        )


class PurchasePage(ResponseModel):
    items: list[Purchase]
    next_cursor: str | None


class PurchaseEvent(ResponseModel):
    seq: int
    from_state: str | None
    to_state: str
    actor: str
    reason: str
    tx_hash: str | None
    at: datetime

    @classmethod
    def of(cls, rec: EventRecord) -> Self:
        return cls(
            seq=rec.seq,
            from_state=None if rec.source is None else rec.source.value,
            to_state=rec.target.value,
            actor=rec.actor,
            reason=rec.reason,
            tx_hash=rec.tx_hash,
            at=when(rec.created_at_us),
        )


class PurchaseEvents(ResponseModel):
    items: list[PurchaseEvent]
