"""The Vitelity ``api.php`` API as the carrier and its feature providers both use it: the module
name, query parameters and credentials, the reading of an XML answer, and ``VitelityApi``, the
integration that holds the HTTP client, breaker and ledger of Vitelity calls.

``carriers.vitelity`` (the carrier: search, orders, releases) and ``carriers.vitelity_features``
(CNAM and E911) stand on this module, so the carrier can name its feature providers.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterable
from typing import Any, ClassVar

import httpx

from carriers import xmltext
from carriers.integration import Integration, MalformedAnswerError, ProviderRefusalError
from carriers.numbering import normalize
from config.carrier_settings import VitelitySettings

NAME = "knm_vitelity"

#: Query parameters that carry credentials (masked in httpx's own request log).
CREDENTIAL_PARAMS = frozenset({"login", "pass"})

_STATUS_REASONS = {
    400: "bad_request",
    401: "unauthenticated",
    403: "unauthorized",
    404: "not_found",
}


def put_param(params: dict[str, str], key: str, value: str | None) -> None:
    """Unset parameters are omitted."""
    if value is not None and value != "":
        params[key] = value


def with_credentials(params: dict[str, str], config: VitelitySettings) -> dict[str, str]:
    """``params`` with the credentials appended (``login``, ``pass``)."""
    put_param(params, "login", config.login.get_secret_value())
    put_param(params, "pass", config.password.get_secret_value())
    return params


def command_params(
    items: Iterable[tuple[str, str | None]], config: VitelitySettings
) -> dict[str, str]:
    """Any command's query parameters in the given order, unset values omitted, the credentials
    last."""
    params: dict[str, str] = {}
    for key, value in items:
        put_param(params, key, value)
    return with_credentials(params, config)


def status_of(root: ET.Element) -> str | None:
    """The envelope's ``<status>`` (``ok`` / ``fail``), ``None`` when absent."""
    return xmltext.text(root, "status")


def read_answer(response: httpx.Response, decode_error: str) -> ET.Element:
    """The answer's root element, whatever its ``<status>``.

    A body that is not XML is ``decode_error`` (KAZOO's reason) after a 2xx, and the provider's
    refusal after any other status (KAZOO ignores the status; a 4xx means nothing was done).
    """
    status = response.status_code
    try:
        return xmltext.parse(response.content)
    except xmltext.XmlError as exc:
        if 200 <= status < 300:
            raise MalformedAnswerError(NAME, f"{decode_error}: {exc}", status) from None
        reason = _STATUS_REASONS.get(status, "http_error")
        raise ProviderRefusalError(NAME, f"{reason} (HTTP {status})", status) from None


def item_object(element: ET.Element) -> dict[str, Any]:
    """An object of ``element``'s children: ``did``/``number`` become the E.164 ``number``,
    leaves their trimmed text, nested elements nested objects; empty children are dropped."""
    out: dict[str, Any] = {}
    for child in element:
        if not isinstance(child.tag, str):
            continue  # comments, processing instructions
        name = xmltext.local(child.tag)
        if xmltext.children(child):
            nested = item_object(child)
            if nested:
                out[name] = nested
            continue
        value = xmltext.clean(child.text)
        if value is None:
            continue
        if name in ("did", "number"):
            out["number"] = normalize(value)
        else:
            out[name] = value
    return out


class VitelityApi(Integration):
    """Calls to Vitelity: the configuration (every call is a POST to ``base_url``)."""

    name: ClassVar[str] = NAME
    config_key: ClassVar[str] = "vitelity"
    config_model: ClassVar[type[VitelitySettings]] = VitelitySettings
    config: VitelitySettings
