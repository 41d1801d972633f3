"""Telnyx's number features: E911 (``knm_telnyx_e911``) and CNAM (``knm_telnyx_cnam``),
over the origination v1 API of ``carriers.telnyx_api``.

E911: an address is an object of the Telnyx account (``POST e911_addresses``) that a number points
at (``PUT numbers/<n>/e911_settings``); the number keeps the address id in its carrier data
(``address_id``, replaced when the address changes and dropped when it is removed). A changed
address is created, assigned, and only then is the previous one deleted (KAZOO also fired a delete
of the previous address before creating the new one, leaving the number pointing at a deleted
address when the create failed). A removed address is unassigned, then deleted. Deleting an address
is best effort, as in KAZOO: a failure leaves an unused address upstream, logged.

CNAM: ``PUT numbers/<n>`` with ``cnam_listing_details`` (outbound; QUIRK kept: that body also
enables caller-ID name lookup) or ``enable_caller_id_name`` (inbound); the answer must echo the
value asked for.

Reconciliation, asked after an ambiguous call: a create whose answer was lost is looked up in
``GET e911_addresses`` (an address with the same fields that no other number uses: reusing an
identical unused address is harmless); an assignment or a CNAM change is read back from
``GET numbers/<n>`` (``e911_address_id``/``e911_enabled``, ``cnam_listing_details``,
``enable_caller_id_name``). The ledger keeps the body being created and then the new address id
(``refs``), so a save re-run after a crash assigns the address an earlier attempt created
instead of creating another.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any, ClassVar

import httpx

from carriers import telnyx_api
from carriers.features import FeatureContext
from carriers.http import CarrierCallError
from carriers.integration import MalformedAnswerError, ProviderRefusalError
from carriers.ledger import Action, Ticket
from carriers.telnyx_api import TelnyxApi, api_headers, api_url, number_path
from carriers.upstream_features import (
    UpstreamCnamProvider,
    UpstreamE911Provider,
    UpstreamFeatureProvider,
    e911_caller_name,
    is_true,
    text_value,
)
from knm.domain.number import PhoneNumber

log = logging.getLogger(__name__)

E911_NAME = "knm_telnyx_e911"
CNAM_NAME = "knm_telnyx_cnam"
CARRIER = telnyx_api.NAME

#: The carrier-data key naming the number's E911 address upstream.
ADDRESS_ID = "address_id"

#: The fields of a created address, compared when a lost create is looked for.
ADDRESS_FIELDS = ("business_name", "city", "state", "postal_code", "line_1", "line_2")

#: ``GET e911_addresses`` page size (the API's maximum) and how many pages are read at most.
PAGE_SIZE = 1000
MAX_PAGES = 50

_ASCII_UPPER = str.maketrans("abcdefghijklmnopqrstuvwxyz", "ABCDEFGHIJKLMNOPQRSTUVWXYZ")
_KEPT = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 ")


# ================================================================================ pure parts
def cleanse(text: str | None) -> str | None:
    """KAZOO's cleansing: upper-case (ASCII), then only ``A-Z``, ``0-9`` and spaces are kept."""
    if text is None:
        return None
    return "".join(c for c in text.translate(_ASCII_UPPER) if c in _KEPT)


def address_body(address: Mapping[str, Any], account_name: str | None = None) -> dict[str, str]:
    """The body of ``POST e911_addresses`` for a number's ``e911`` object; empty values
    are omitted."""
    fields = [
        ("business_name", e911_caller_name(address, account_name)),
        ("city", cleanse(text_value(address, "locality"))),
        ("state", cleanse(text_value(address, "region"))),
        ("postal_code", text_value(address, "postal_code")),
        ("line_1", cleanse(text_value(address, "street_address"))),
        ("line_2", cleanse(text_value(address, "extended_address"))),
    ]
    return {key: value for key, value in fields if value}


def assign_body(address_id: str | None) -> dict[str, Any]:
    """``PUT numbers/<n>/e911_settings``: point at ``address_id``, or at nothing."""
    return {"e911_enabled": address_id is not None, "e911_address_id": address_id}


def failure_reason(doc: Mapping[str, Any]) -> str:
    """KAZOO's reason of a refused E911 call: the JSON text ``{"message":..,"reasons":..}``."""
    message = text_value(doc, "message")
    return json.dumps({"message": message, "reasons": doc.get("reasons")}, separators=(",", ":"))


def created_id(doc: Mapping[str, Any]) -> str:
    """The new address's id; a create succeeded iff ``status`` is ``success``."""
    if doc.get("status") != "success":
        raise ProviderRefusalError(CARRIER, failure_reason(doc))
    address_id = doc.get("id")
    if not isinstance(address_id, str) or not address_id:
        raise MalformedAnswerError(CARRIER, "empty_response: the created address has no id")
    return address_id


def check_assigned(doc: Mapping[str, Any]) -> None:
    """An e911_settings answer succeeded iff ``success`` is absent or true."""
    if "success" in doc and doc["success"] not in (True, "true"):
        raise ProviderRefusalError(CARRIER, failure_reason(doc))


def echoes(doc: Mapping[str, Any], key: str, wanted: Any) -> bool:
    """Whether a number's settings show ``key`` at ``wanted`` (booleans as KAZOO's ``is_true``)."""
    value = doc.get(key)
    if isinstance(wanted, bool):
        return is_true(value) == wanted
    return bool(value == wanted)


def check_echo(doc: Mapping[str, Any], key: str, wanted: Any) -> None:
    """A CNAM answer must echo what was asked for (KAZOO crashed otherwise)."""
    if not echoes(doc, key, wanted):
        raise ProviderRefusalError(CARRIER, f"{key} not applied: answered {doc.get(key)!r}")


def decode_list(response: httpx.Response) -> list[dict[str, Any]]:
    """A list answer (``GET e911_addresses``): a JSON array, or an object's ``data`` array."""
    if response.status_code != 200:
        telnyx_api.decode(response)  # raises the reason
    try:
        doc = json.loads(response.content)
    except ValueError:
        raise MalformedAnswerError(CARRIER, "empty_response: malformed JSON", 200) from None
    if isinstance(doc, dict):
        doc = doc.get("data")
    if not isinstance(doc, list):
        raise MalformedAnswerError(CARRIER, "empty_response: the answer is not a list", 200)
    return [item for item in doc if isinstance(item, dict)]


def same_address(item: Mapping[str, Any], body: Mapping[str, str]) -> bool:
    """Whether an upstream address has the fields of a create body (case and padding aside:
    Telnyx answered ``Valued customer`` to ``Valued Customer``)."""

    def norm(value: Any) -> str:
        return str(value or "").strip().casefold()

    return all(norm(item.get(key)) == norm(body.get(key)) for key in ADDRESS_FIELDS)


def address_id_of(pn: PhoneNumber) -> str | None:
    return text_value(pn.carrier_data, ADDRESS_ID)


# ================================================================================ the calls
class _TelnyxFeature(UpstreamFeatureProvider):
    """The Telnyx calls both providers make."""

    carrier_class: ClassVar[type[TelnyxApi]] = TelnyxApi

    def _call(self, method: str, path: str, json_body: Any = None) -> httpx.Response:
        config = self.carrier.config
        return self.http.call(
            method,
            api_url(config, path),
            idempotent=method == "GET",
            json=json_body,
            headers=api_headers(config),
        )

    def _number(self, pn: PhoneNumber) -> dict[str, Any]:
        """``GET numbers/<n>``: the number's settings upstream (the reconciliation question)."""
        return telnyx_api.decode(self._call("GET", number_path(pn.number)))

    def _update_number(self, pn: PhoneNumber, body: dict[str, Any], key: str) -> bool:
        """``PUT numbers/<n>`` with ``body``; the answer must echo ``body[key]``."""
        check_echo(
            telnyx_api.decode(self._call("PUT", number_path(pn.number), body)), key, body[key]
        )
        return True

    def _number_has(self, pn: PhoneNumber, key: str, wanted: Any) -> bool | None:
        """``True`` when ``GET numbers/<n>`` shows ``key`` at ``wanted``, else ``None``."""
        return True if echoes(self._number(pn), key, wanted) else None


# ================================================================================ E911
class TelnyxE911Provider(UpstreamE911Provider, _TelnyxFeature):
    """E911 addresses at Telnyx (feature ``e911``)."""

    name: ClassVar[str] = E911_NAME

    def held_upstream(self, pn: PhoneNumber) -> bool:
        """Telnyx holds an address for the number while its carrier data names one."""
        return address_id_of(pn) is not None

    # ------------------------------------------------------------------ set, remove
    def provision(self, pn: PhoneNumber, wanted: dict[str, Any], fctx: FeatureContext) -> None:
        """Create the address (once), assign it, then delete the number's previous one."""
        body = address_body(wanted, fctx.account_name)
        previous = address_id_of(pn)

        def run(ticket: Ticket) -> dict[str, Any]:
            earlier = text_value(ticket.refs, ADDRESS_ID)  # created by an unfinished attempt
            if ticket.reconcile and not ticket.refs and (done := self._done(pn, wanted)):
                return done  # a rerun (a write conflict) of the last save, which took effect
            new_id = self._address_for(pn, ticket, body)
            try:
                self.change(lambda: self._assign(pn, new_id), lambda: self._assigned(pn, new_id))
            except ProviderRefusalError:
                self._delete_address(pn, new_id)  # refused: the new address would stay unused
                raise
            for stale in {previous, earlier} - {new_id, None}:
                self._delete_address(pn, str(stale))
            return {ADDRESS_ID: new_id, "address": wanted}

        def settled(done: dict[str, Any]) -> bool:
            return done.get("address") == wanted and text_value(done, ADDRESS_ID) is not None

        result = self.guarded(
            pn, Action.ACTIVATE, lambda: self.ledgered(pn, Action.ACTIVATE, fctx, run, settled)
        )
        pn.set_carrier_data({**pn.carrier_data, ADDRESS_ID: result[ADDRESS_ID]})

    def unprovision(self, pn: PhoneNumber, fctx: FeatureContext) -> None:
        """Unassign the number's address, then delete it."""
        previous = address_id_of(pn)

        def run(ticket: Ticket) -> dict[str, Any]:
            self.change(lambda: self._assign(pn, None), lambda: self._assigned(pn, None))
            if previous is not None:
                self._delete_address(pn, previous)
            return {}

        self.guarded(
            pn,
            Action.DEACTIVATE,
            lambda: self.ledgered(pn, Action.DEACTIVATE, fctx, run, lambda done: True),
        )
        data = dict(pn.carrier_data)
        data.pop(ADDRESS_ID, None)
        pn.set_carrier_data(data)

    def _done(self, pn: PhoneNumber, wanted: dict[str, Any]) -> dict[str, Any] | None:
        """The ledger's last result when it set this same address and the number still points
        at it upstream (asked), else ``None``."""
        doc = self.ledger.get(self.name, pn.number) or {}
        done = doc.get("result") or {}
        known = text_value(done, ADDRESS_ID)
        if known is None or done.get("address") != wanted:
            return None
        if not self.ask(lambda: self._assigned(pn, known)):
            return None
        return {ADDRESS_ID: known, "address": wanted}

    def _address_for(self, pn: PhoneNumber, ticket: Ticket, body: dict[str, str]) -> str:
        """The id of an address with ``body``: one an unfinished attempt created, else a new one.

        The intent (the body) is in the ledger before the create is sent, the id as soon as it
        is known.
        """
        if ticket.refs.get("body") == body:
            known = text_value(ticket.refs, ADDRESS_ID)
            if known is not None:
                return known
            if ticket.reconcile and (found := self.ask(lambda: self._find(pn, body))):
                self.ledger.note(ticket, **{ADDRESS_ID: found})
                return found
        self.ledger.note(ticket, body=body, **{ADDRESS_ID: None})
        new_id = self.change(lambda: self._create(body), lambda: self._find(pn, body))
        self.ledger.note(ticket, **{ADDRESS_ID: new_id})
        return new_id

    # ------------------------------------------------------------------ the calls
    def _create(self, body: dict[str, str]) -> str:
        return created_id(telnyx_api.decode(self._call("POST", "e911_addresses", body)))

    def _assign(self, pn: PhoneNumber, address_id: str | None) -> bool:
        response = self._call(
            "PUT", f"{number_path(pn.number)}/e911_settings", assign_body(address_id)
        )
        if address_id is None and response.status_code == 404:
            log.info(
                "%s %s: not on the account any more, nothing to unassign", self.name, pn.number
            )
            return True
        check_assigned(telnyx_api.decode(response))
        return True

    def _assigned(self, pn: PhoneNumber, address_id: str | None) -> bool | None:
        """``True`` when the number points at ``address_id`` (``None``: at nothing) upstream."""
        doc = self._number(pn)
        enabled = doc.get("e911_enabled") is True
        if doc.get("e911_address_id") == address_id and enabled == (address_id is not None):
            return True
        return None

    def _find(self, pn: PhoneNumber, body: dict[str, str]) -> str | None:
        """An upstream address with ``body``'s fields that no other number uses (the newest)."""
        found: list[str] = []
        for page in range(1, MAX_PAGES + 1):
            response = self.http.call(
                "GET",
                api_url(self.carrier.config, "e911_addresses"),
                idempotent=True,
                params={"page": page, "per_page": PAGE_SIZE},
                headers=api_headers(self.carrier.config),
            )
            items = decode_list(response)
            found += [
                str(item["id"]) for item in items if item.get("id") and same_address(item, body)
            ]
            if len(items) < PAGE_SIZE:
                break
        for address_id in reversed(found):
            if not self._used_elsewhere(pn, address_id):
                return address_id
        return None

    def _used_elsewhere(self, pn: PhoneNumber, address_id: str) -> bool:
        """Whether another number of knm's points at ``address_id`` (or is creating it)."""
        db = self.ctx.db
        other = {"$ne": pn.number}
        if db["numbers"].find_one({"_id": other, "pvt_carrier_data.address_id": address_id}):
            return True
        ledger = {
            "module": self.name,
            "number": other,
            "$or": [{"result.address_id": address_id}, {"refs.address_id": address_id}],
        }
        return db["provisioning"].find_one(ledger) is not None

    def _delete_address(self, pn: PhoneNumber, address_id: str) -> None:
        """``DELETE e911_addresses/<id>``, best effort (KAZOO's fire-and-forget)."""
        try:
            response = self.change(lambda: self._call("DELETE", f"e911_addresses/{address_id}"))
            if response.status_code != 404:  # 404: gone already (an earlier attempt)
                check_assigned(telnyx_api.decode(response))
        except CarrierCallError as exc:
            log.warning(
                "%s %s: address %s not deleted, it stays unused upstream: %s",
                self.name,
                pn.number,
                address_id,
                exc.reason,
            )


# ================================================================================ CNAM
class TelnyxCnamProvider(UpstreamCnamProvider, _TelnyxFeature):
    """Outbound CNAM listing and inbound caller-ID name lookup at Telnyx."""

    name: ClassVar[str] = CNAM_NAME

    def lookup_on_upstream(self, pn: PhoneNumber) -> bool:
        """A Telnyx CNAM listing switches caller-ID name on too (``enable_caller_id_name``)."""
        return "inbound_cnam" in pn.features or "outbound_cnam" in pn.features

    def send_display_name(self, pn: PhoneNumber, name: str) -> None:
        body = {"cnam_listing_details": name, "enable_caller_id_name": True}
        self.guarded(
            pn,
            Action.ACTIVATE,
            lambda: self.change(
                lambda: self._update_number(pn, body, "cnam_listing_details"),
                lambda: self._number_has(pn, "cnam_listing_details", name),
            ),
        )

    def send_lookup(self, pn: PhoneNumber, enable: bool) -> None:
        self._set_lookup(pn, enable, Action.ACTIVATE if enable else Action.DEACTIVATE)

    def _set_lookup(self, pn: PhoneNumber, enable: bool, action: Action) -> None:
        body = {"enable_caller_id_name": enable}
        self.guarded(
            pn,
            action,
            lambda: self.change(
                lambda: self._update_number(pn, body, "enable_caller_id_name"),
                lambda: self._number_has(pn, "enable_caller_id_name", enable),
            ),
        )
