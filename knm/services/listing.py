"""KAZOO's number listing row: the columns every CSV job writes.

Values come from the *activated* features (``pvt_features``), not from the public fields, so
the listing shows what routing and billing actually use.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from knm.domain.number import PhoneNumber, to_gregorian_seconds

LISTING_COLUMNS: Final[tuple[str, ...]] = (
    "e164",
    "account_name",
    "account_id",
    "previously_assigned_to",
    "state",
    "created",
    "modified",
    "used_by",
    "ported_in",
    "carrier_module",
    "cnam.inbound",
    "cnam.outbound",
    "e911.locality",
    "e911.name",
    "e911.region",
    "e911.street_address",
    "e911.extended_address",
    "e911.postal_code",
    "prepend.enabled",
    "prepend.name",
    "prepend.number",
    "ringback.early",
    "ringback.transfer",
    "force_outbound",
    "failover.e164",
    "failover.sip",
)
RESULT_COLUMNS: Final[tuple[str, ...]] = (*LISTING_COLUMNS, "error")


def _bool(value: Any) -> str:
    return "true" if value in (True, "true") else "false"


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def listing_row(
    pn: PhoneNumber,
    account_names: Mapping[str, str],
    default_force_outbound: bool = False,
) -> dict[str, str]:
    """The listing of one number; ``account_names`` maps account ids to names."""
    features = pn.features
    inbound = features.get("inbound_cnam") or {}
    outbound = features.get("outbound_cnam") or {}
    e911 = features.get("e911") or {}
    prepend = features.get("prepend") or {}
    ringback = features.get("ringback") or {}
    failover = features.get("failover") or {}
    owner = pn.assigned_to
    row: dict[str, str] = {
        "e164": pn.number,
        "account_name": account_names.get(owner, "") if owner else "",
        "account_id": owner or "",
        "previously_assigned_to": pn.previously_assigned_to or "",
        "state": pn.state.value if pn.state else "",
        "created": str(to_gregorian_seconds(pn.created)),
        "modified": str(to_gregorian_seconds(pn.modified)),
        "used_by": pn.used_by or "",
        "ported_in": _bool(pn.ported_in),
        "carrier_module": pn.carrier_module,
        "cnam.inbound": _bool(inbound.get("inbound_lookup", False)),
        "cnam.outbound": _text(outbound.get("display_name")),
        "e911.locality": _text(e911.get("locality")),
        "e911.name": _text(e911.get("caller_name")),
        "e911.region": _text(e911.get("region")),
        "e911.street_address": _text(e911.get("street_address")),
        "e911.extended_address": _text(e911.get("extended_address")),
        "e911.postal_code": _text(e911.get("postal_code")),
        "prepend.enabled": _bool(prepend.get("enabled", False)) if prepend else "",
        "prepend.name": _text(prepend.get("name")),
        "prepend.number": _text(prepend.get("number")),
        "ringback.early": _text(ringback.get("early")),
        "ringback.transfer": _text(ringback.get("transfer")),
        "force_outbound": _bool(features.get("force_outbound", default_force_outbound)),
        "failover.e164": _text(failover.get("e164")),
        "failover.sip": _text(failover.get("sip")),
    }
    return row
