"""Accessibility API: contrast and shortcut validation, the user's preferences.

Every route needs a valid bearer token (no scope): preferences belong to the token's
subject, and validations are counted in ``accessibility_validation_failures_total``, which
anonymous callers must not be able to inflate (the guide alerts on it).

- ``POST /api/v1/accessibility/contrast``: a theme (colour tokens + pairs with a role) ->
  every pair's ratio and threshold, failures and passes (200 even when pairs fail).
- ``POST /api/v1/accessibility/shortcuts``: a keymap -> duplicates, reserved chords and
  WCAG 2.1.4 problems per platform.
- ``GET``/``PUT /api/v1/accessibility/preferences``: the caller's preferences.
"""

from __future__ import annotations

from quart import Blueprint, Response
from quart_schema import document_response, security_scheme, tag, validate_request

from dchat_node.accessibility.models import (
    ContrastReport,
    Keymap,
    Preferences,
    PreferencesIn,
    ShortcutReport,
    Theme,
)
from dchat_node.accessibility.service import AccessibilityService
from dchat_node.api import authenticator, json_response, services
from dchat_node.security.auth import current_principal, require_auth

bp = Blueprint("accessibility", __name__, url_prefix="/api/v1/accessibility")

BEARER: list[dict[str, list[str]]] = [{"bearerAuth": []}]


def _service() -> AccessibilityService:
    return services().accessibility


@bp.post("/contrast")
@tag(["accessibility"])
@security_scheme(BEARER)
@require_auth(authenticator)
@validate_request(Theme)
@document_response(ContrastReport)
async def validate_contrast(data: Theme) -> Response:
    """Check a theme's colour pairs against WCAG 2.2 contrast (AA, or AAA in strict mode)."""
    return json_response(_service().validate_contrast(data))


@bp.post("/shortcuts")
@tag(["accessibility"])
@security_scheme(BEARER)
@require_auth(authenticator)
@validate_request(Keymap)
@document_response(ShortcutReport)
async def validate_shortcuts(data: Keymap) -> Response:
    """Check a keymap: duplicates, reserved browser/OS chords, WCAG 2.1.4."""
    return json_response(_service().validate_shortcuts(data))


@bp.get("/preferences")
@tag(["accessibility"])
@security_scheme(BEARER)
@require_auth(authenticator)
@document_response(Preferences)
async def get_preferences() -> Response:
    """The caller's accessibility preferences (defaults until saved)."""
    return json_response(await _service().preferences(current_principal().subject))


@bp.put("/preferences")
@tag(["accessibility"])
@security_scheme(BEARER)
@require_auth(authenticator)
@validate_request(PreferencesIn)
@document_response(Preferences)
async def put_preferences(data: PreferencesIn) -> Response:
    """Replace the caller's accessibility preferences."""
    return json_response(await _service().save_preferences(current_principal().subject, data))
