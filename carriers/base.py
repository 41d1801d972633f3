"""The carrier contract (KAZOO's ``knm_gen_carrier``, spec §3.1).

A carrier module searches its stock, acquires (buys) a number, disconnects (releases) it and may
check numbers' status upstream. Modules are looked up by the name stored on the number document
(``pvt_carrier_module``), so adding a carrier means adding one class to the registry.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from pymongo.database import Database

from config.settings import Settings
from knm.domain.errors import KnmError
from knm.domain.number import NumberState, PhoneNumber


@dataclass(frozen=True)
class CarrierContext:
    """What a carrier module may use: the database and the settings of this process."""

    db: Database[dict[str, Any]]
    settings: Settings


@dataclass(frozen=True)
class SearchRequest:
    """One carrier search (spec §3.3): ``prefix`` is normalized (dial code + user prefix)."""

    prefix: str
    quantity: int
    offset: int = 0
    account_id: str | None = None
    reseller_id: str | None = None
    query_id: str = ""
    country: str = "US"
    dialcode: str = "+1"
    blocks: int | None = None


@dataclass(frozen=True)
class SearchResult:
    """A number a carrier offers: in the system already (available/reserved) or discovered."""

    number: str
    carrier_module: str
    state: NumberState
    carrier_data: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "number": self.number,
            "carrier_module": self.carrier_module,
            "state": self.state.value,
            "carrier_data": self.carrier_data,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SearchResult:
        return cls(
            number=data["number"],
            carrier_module=data["carrier_module"],
            state=NumberState(data["state"]),
            carrier_data=dict(data.get("carrier_data") or {}),
        )


class CarrierNotImplementedError(Exception):
    """The module has no such callback (KAZOO answers ``not_implemented``)."""


class Carrier:
    """Base of every carrier module; the defaults are KAZOO's "do nothing" answers."""

    name: ClassVar[str]
    is_local: ClassVar[bool] = False
    billable: ClassVar[bool] = True
    should_lookup_cnam: ClassVar[bool] = True
    max_prefix_length: ClassVar[int] = 3

    def __init__(self, ctx: CarrierContext) -> None:
        self.ctx = ctx

    def find_numbers(self, request: SearchRequest) -> list[SearchResult]:
        """Search the stock; an empty list is KAZOO's ``not_available``."""
        return []

    def acquire_number(self, pn: PhoneNumber) -> None:
        """Buy or provision ``pn`` upstream; may update its carrier data. Raise ``KnmError``."""

    def disconnect_number(self, pn: PhoneNumber) -> None:
        """Release ``pn`` upstream. Raise ``KnmError`` on failure."""

    def acquire_numbers(
        self, pns: Sequence[PhoneNumber], request_id: str | None = None
    ) -> dict[str, KnmError]:
        """Acquire a batch; modules with a bulk API override this. Returns failures by number.

        ``request_id`` names the request (a rerun of it must not buy twice: the integrations'
        provisioning ledger uses it).
        """
        return each_number(pns, self.acquire_number)

    def disconnect_numbers(
        self, pns: Sequence[PhoneNumber], request_id: str | None = None
    ) -> dict[str, KnmError]:
        """Disconnect a batch; returns failures by number."""
        return each_number(pns, self.disconnect_number)

    def check_numbers(self, numbers: Sequence[str]) -> dict[str, str]:
        """Ask the carrier for the numbers' status."""
        raise CarrierNotImplementedError(self.name)

    def is_number_billable(self, pn: PhoneNumber) -> bool:
        return self.billable


def each_number(pns: Sequence[PhoneNumber], fn: Any) -> dict[str, KnmError]:
    """Run ``fn`` on every number; a ``KnmError`` fails that number only."""
    failed: dict[str, KnmError] = {}
    for pn in pns:
        try:
            fn(pn)
        except KnmError as error:
            failed[pn.number] = error
    return failed


def prefix_range(prefix: str) -> dict[str, str]:
    """A MongoDB ``_id`` range holding exactly the numbers that start with ``prefix``."""
    return {"$gte": prefix, "$lt": prefix + "\uffff"}
