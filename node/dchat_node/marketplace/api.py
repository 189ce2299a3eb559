"""Marketplace API (``/api/v1/marketplace``): listings and escrowed purchases.

Listing reads are public. Creating or changing listings and purchases needs a bearer token
with the ``marketplace:write`` scope; reading a purchase needs any valid token of its buyer
or creator, or one with ``marketplace:arbiter`` (arbiters also resolve disputes). Lists use
opaque cursor pagination (``next_cursor``).

``POST /purchases`` takes an optional ``Idempotency-Key`` header (1-200 visible ASCII
characters, scoped to the token's subject): the same key and body returns the first
response again (with ``Idempotent-Replayed: true``), the same key with another body is
422, and a request while the first one with that key is still running is 409.
"""

from __future__ import annotations

import hashlib
import json
import re

from quart import Blueprint, Response, request
from quart_schema import document_response, security_scheme, tag, validate_request

from dchat_node.api import authenticator, json_response, services
from dchat_node.api.models import encode_cursor
from dchat_node.api.validation import validate_querystring
from dchat_node.marketplace.models import (
    CreateListing,
    CreatePurchase,
    Listing,
    ListingPage,
    ListingQuery,
    OpenDispute,
    PageQuery,
    Purchase,
    PurchaseEvent,
    PurchaseEvents,
    PurchasePage,
    Resolve,
    SubmitPayment,
    UpdateListing,
)
from dchat_node.marketplace.service import MarketplaceService, Party
from dchat_node.marketplace.store import ListingFilter, PurchaseRecord
from dchat_node.security.auth import current_principal, require_auth
from dchat_node.services.errors import DomainError

SCOPE_MARKET_WRITE = "marketplace:write"
SCOPE_ARBITER = "marketplace:arbiter"
ID = "int(max=9223372036854775807)"
BEARER: list[dict[str, list[str]]] = [{"bearerAuth": []}]
_IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7e]{1,200}$")

bp = Blueprint("marketplace", __name__, url_prefix="/api/v1/marketplace")


def market() -> MarketplaceService:
    svc: MarketplaceService = services().marketplace
    return svc


def _party_of_request() -> Party:
    principal = authenticator().authenticate(request.headers.get("Authorization"))
    return Party(principal.subject, SCOPE_ARBITER in principal.scopes)


def _party() -> Party:
    principal = current_principal()
    return Party(principal.subject, SCOPE_ARBITER in principal.scopes)


def _purchase(rec: PurchaseRecord) -> Purchase:
    return Purchase.of(rec, market().reference(rec))


class BadIdempotencyKey(DomainError):
    status = 400
    code = "bad_request"


# -- listings ----------------------------------------------------------------------------
@bp.post("/listings")
@tag(["marketplace"])
@security_scheme(BEARER)
@require_auth(authenticator, SCOPE_MARKET_WRITE)
@validate_request(CreateListing)
@document_response(Listing, 201)
async def create_listing(data: CreateListing) -> Response:
    """Publish a listing (needs marketplace:write); the token's subject is its creator."""
    rec = await market().create_listing(current_principal().subject, data.model_dump())
    return json_response(Listing.of(rec), 201)


@bp.get("/listings")
@tag(["marketplace"])
@validate_querystring(ListingQuery)
@document_response(ListingPage)
async def list_listings(query_args: ListingQuery) -> Response:
    """Listings, oldest first, filtered by creator, status, currency, price range and text."""
    q = query_args
    flt = ListingFilter(
        creator=q.creator,
        status=q.status,
        token=q.token,
        min_price=None if q.min_price is None else int(q.min_price),
        max_price=None if q.max_price is None else int(q.max_price),
        text=q.q,
    )
    rows, more = await market().list_listings(flt, q.after_id(), q.limit)
    cursor = encode_cursor(rows[-1].id) if more and rows else None
    return json_response(ListingPage(items=[Listing.of(r) for r in rows], next_cursor=cursor))


@bp.get(f"/listings/<{ID}:listing_id>")
@tag(["marketplace"])
@document_response(Listing)
async def get_listing(listing_id: int) -> Response:
    """One listing."""
    return json_response(Listing.of(await market().get_listing(listing_id)))


@bp.patch(f"/listings/<{ID}:listing_id>")
@tag(["marketplace"])
@security_scheme(BEARER)
@require_auth(authenticator, SCOPE_MARKET_WRITE)
@validate_request(UpdateListing)
@document_response(Listing)
async def update_listing(listing_id: int, data: UpdateListing) -> Response:
    """Change a listing (its creator only); only the fields given change."""
    changes = data.model_dump(exclude_unset=True)
    for name in ("title", "description", "price", "payout_address", "status"):
        if name in changes and changes[name] is None:
            raise DomainError(f"{name} cannot be null")
    rec = await market().update_listing(current_principal().subject, listing_id, changes)
    return json_response(Listing.of(rec))


@bp.delete(f"/listings/<{ID}:listing_id>")
@tag(["marketplace"])
@security_scheme(BEARER)
@require_auth(authenticator, SCOPE_MARKET_WRITE)
@document_response(Listing)
async def delist(listing_id: int) -> Response:
    """Delist a listing (its creator only): no new purchases; existing ones go on."""
    rec = await market().delist(current_principal().subject, listing_id)
    return json_response(Listing.of(rec))


# -- purchases ---------------------------------------------------------------------------
@bp.post("/purchases")
@tag(["marketplace"])
@security_scheme(BEARER)
@require_auth(authenticator, SCOPE_MARKET_WRITE)
@validate_request(CreatePurchase)
@document_response(Purchase, 201)
async def create_purchase(data: CreatePurchase) -> Response:
    """Buy one unit of a listing: reserves it and returns where to pay (``pay_to``), how
    much (``amount``, ``token``) and the ``reference`` the payment must carry, before
    ``expires_at``. Optional ``Idempotency-Key`` header."""
    buyer = current_principal().subject
    svc = market()

    async def produce() -> tuple[int, str]:
        rec = await svc.create_purchase(buyer, data.listing_id)
        return 201, _purchase(rec).model_dump_json()

    key = request.headers.get("Idempotency-Key")
    if key is None:
        status, body = await produce()
        return Response(body, status=status, content_type="application/json")
    if not _IDEMPOTENCY_KEY.fullmatch(key):
        raise BadIdempotencyKey("Idempotency-Key must be 1 to 200 visible ASCII characters")
    digest = hashlib.sha256(
        json.dumps(data.model_dump(mode="json"), sort_keys=True).encode()
    ).hexdigest()
    status, body, replayed = await svc.idempotent(buyer, key, digest, produce)
    resp = Response(body, status=status, content_type="application/json")
    if replayed:
        resp.headers["Idempotent-Replayed"] = "true"
    return resp


@bp.get("/purchases")
@tag(["marketplace"])
@security_scheme(BEARER)
@validate_querystring(PageQuery)
@document_response(PurchasePage)
async def list_purchases(query_args: PageQuery) -> Response:
    """The token subject's purchases, as buyer or as creator, oldest first."""
    rows, more = await market().list_purchases(
        _party_of_request(), query_args.after_id(), query_args.limit
    )
    cursor = encode_cursor(rows[-1].id) if more and rows else None
    return json_response(PurchasePage(items=[_purchase(r) for r in rows], next_cursor=cursor))


@bp.get(f"/purchases/<{ID}:purchase_id>")
@tag(["marketplace"])
@security_scheme(BEARER)
@document_response(Purchase)
async def get_purchase(purchase_id: int) -> Response:
    """One purchase (its buyer, its creator or an arbiter), with ``last_error`` when the
    payment check is failing."""
    return json_response(_purchase(await market().get_purchase(_party_of_request(), purchase_id)))


@bp.get(f"/purchases/<{ID}:purchase_id>/events")
@tag(["marketplace"])
@security_scheme(BEARER)
@document_response(PurchaseEvents)
async def purchase_events(purchase_id: int) -> Response:
    """A purchase's event log, oldest first."""
    events = await market().events(_party_of_request(), purchase_id)
    return json_response(PurchaseEvents(items=[PurchaseEvent.of(e) for e in events]))


@bp.post(f"/purchases/<{ID}:purchase_id>/payment")
@tag(["marketplace"])
@security_scheme(BEARER)
@require_auth(authenticator, SCOPE_MARKET_WRITE)
@validate_request(SubmitPayment)
@document_response(Purchase, 202)
async def submit_payment(purchase_id: int, data: SubmitPayment) -> Response:
    """The buyer names the transaction that pays the purchase; the node checks it on chain
    from then on (202: accepted, not yet verified)."""
    rec = await market().submit_payment(_party(), purchase_id, data.tx_hash)
    return json_response(_purchase(rec), 202)


def _action(name: str, doc: str) -> None:
    async def view(purchase_id: int) -> Response:
        method = getattr(market(), name)
        return json_response(_purchase(await method(_party(), purchase_id)))

    view.__name__ = name
    view.__doc__ = doc
    decorated = document_response(Purchase)(require_auth(authenticator, SCOPE_MARKET_WRITE)(view))
    decorated = tag(["marketplace"])(security_scheme(BEARER)(decorated))
    bp.post(f"/purchases/<{ID}:purchase_id>/{name}")(decorated)


_action("deliver", "The creator marks the goods delivered (confirmed -> delivered).")
_action("release", "The buyer accepts the delivery: escrow released to the creator.")
_action(
    "refund",
    "Refund the buyer: the creator (confirmed, delivered or refund_pending), or an arbiter "
    "for a late payment (refund_pending).",
)


@bp.post(f"/purchases/<{ID}:purchase_id>/dispute")
@tag(["marketplace"])
@security_scheme(BEARER)
@require_auth(authenticator, SCOPE_MARKET_WRITE)
@validate_request(OpenDispute)
@document_response(Purchase)
async def dispute(purchase_id: int, data: OpenDispute) -> Response:
    """The buyer disputes a confirmed or delivered purchase: no automatic release."""
    return json_response(_purchase(await market().dispute(_party(), purchase_id, data.reason)))


@bp.post(f"/purchases/<{ID}:purchase_id>/resolve")
@tag(["marketplace"])
@security_scheme(BEARER)
@require_auth(authenticator, SCOPE_MARKET_WRITE)
@validate_request(Resolve)
@document_response(Purchase)
async def resolve(purchase_id: int, data: Resolve) -> Response:
    """An arbiter (marketplace:arbiter) resolves a dispute: released or refunded."""
    rec = await market().resolve(_party(), purchase_id, data.outcome, data.note)
    return json_response(_purchase(rec))
