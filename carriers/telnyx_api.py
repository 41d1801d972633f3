"""The Telnyx origination v1 API as the carrier and its feature providers both use it: the
module name, URLs, headers, the reading of an answer, and ``TelnyxApi``, the integration that
holds the HTTP client, breaker and ledger of Telnyx calls.

``carriers.telnyx`` (the carrier: search and orders) and ``carriers.telnyx_features`` (E911 and
CNAM) stand on this module, so the carrier can name its feature providers.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar
from urllib.parse import quote

import httpx

from carriers.integration import Integration, MalformedAnswerError, ProviderRefusalError
from config.carrier_settings import TelnyxSettings

NAME = "knm_telnyx"

_STATUS_REASONS = {
    400: "bad_request",
    401: "unauthenticated",
    403: "unauthorized",
    404: "not_found",
}


def decode(response: httpx.Response) -> dict[str, Any]:
    """A 200 JSON object, else the reason with the provider's message when it has one."""
    body = response.content.lstrip()
    if response.status_code == 200:
        if not body.startswith(b"{"):
            raise MalformedAnswerError(NAME, "empty_response: the answer is not a JSON object", 200)
        try:
            doc = json.loads(body)
        except ValueError:
            raise MalformedAnswerError(NAME, "empty_response: malformed JSON", 200) from None
        if not isinstance(doc, dict):
            raise MalformedAnswerError(NAME, "empty_response: the answer is not a JSON object", 200)
        return doc
    status = response.status_code
    reason = _STATUS_REASONS.get(status, "server_error" if status >= 500 else "empty_response")
    message = _message(body)
    raise ProviderRefusalError(NAME, f"{reason}: {message}" if message else reason, status)


def _message(body: bytes) -> str | None:
    try:
        doc = json.loads(body)
    except ValueError:
        return None
    if isinstance(doc, dict) and isinstance(doc.get("message"), str):
        return str(doc["message"])
    return None


def number_path(number: str) -> str:
    """``+13129677542`` -> ``numbers/%2B13129677542``."""
    return "numbers/" + quote(number, safe="")


def api_url(config: TelnyxSettings, path: str) -> str:
    """The URL of ``path`` under the configured base."""
    return config.base_url.rstrip("/") + "/" + path


def api_headers(config: TelnyxSettings) -> dict[str, str]:
    """Every call's headers: JSON answers and the credentials."""
    return {
        "Accept": "application/json",
        "x-api-user": config.user.get_secret_value(),
        "x-api-token": config.token.get_secret_value(),
    }


class TelnyxApi(Integration):
    """Calls to Telnyx: the configuration, the URL of a path and every call's headers."""

    name: ClassVar[str] = NAME
    config_key: ClassVar[str] = "telnyx"
    config_model: ClassVar[type[TelnyxSettings]] = TelnyxSettings
    gated_disconnect: ClassVar[bool] = True
    config: TelnyxSettings

    def _url(self, path: str) -> str:
        return api_url(self.config, path)

    def _headers(self) -> dict[str, str]:
        return api_headers(self.config)
