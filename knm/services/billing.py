"""What an account's numbers count for billing: KAZOO's ``kz_services_quantities``.

For each number the account holds::

    phone_numbers.<classification>  +1, only when pvt_features has no ``local`` marker
    number_carriers.<module>        +1 (local numbers too)
    number_services.<feature key>   +1 per key of pvt_features, ``local`` included

``billable`` is the sum of ``phone_numbers``. KAZOO does not say which states count (it
counts whatever per-account copy of a number exists); knm counts the numbers assigned to the
account in ``in_service``, ``port_in``, ``port_out`` and ``reserved``: the states in which the
account holds the number (the same set ``lookup_account`` routes). Leftover owners on pool
states (available, aging, released, discovery) are not billed. A number no classifier matches
counts as ``phone_numbers.unknown`` (the default table's catch-all name).

One indexed query (``pvt_assigned_to`` + ``pvt_state``, index ``assigned_state_id``), with a
projection; documents are read through ``PhoneNumber.from_document`` so KAZOO-format documents
count with the same migrations (module renames, list-shaped features, the ``local`` marker) as
everywhere else.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, Final

from knm.domain import convert
from knm.domain.number import LOCAL_MARKER, NumberState, PhoneNumber

if TYPE_CHECKING:
    from knm.services.facade import Knm

#: States in which an account's numbers are counted.
BILLED_STATES: Final[tuple[NumberState, ...]] = (
    NumberState.IN_SERVICE,
    NumberState.PORT_IN,
    NumberState.PORT_OUT,
    NumberState.RESERVED,
)
UNCLASSIFIED: Final[str] = "unknown"

_PROJECTION: Final[dict[str, int]] = {
    "_id": 1,
    "pvt_state": 1,
    "pvt_carrier_module": 1,
    "pvt_module_name": 1,
    "pvt_features": 1,
}


def quantities(knm: Knm, account_id: str) -> dict[str, Any]:
    """``{"account_id", "phone_numbers", "number_carriers", "number_services", "billable"}``."""
    docs = knm.store.numbers.find(
        {"pvt_assigned_to": account_id, "pvt_state": {"$in": [s.value for s in BILLED_STATES]}},
        _PROJECTION,
    )
    modules = knm.numbers.modules
    pns = (PhoneNumber.from_document(d, modules) for d in docs)
    return {"account_id": account_id, **count(pns, knm.settings.classifiers)}


def count(
    pns: Iterable[PhoneNumber], classifiers: convert.ClassifierTable | None = None
) -> dict[str, Any]:
    """The three quantity objects and ``billable`` for ``pns`` (keys sorted, zeros left out)."""
    phone_numbers: Counter[str] = Counter()
    carriers: Counter[str] = Counter()
    services: Counter[str] = Counter()
    for pn in pns:
        if LOCAL_MARKER not in pn.features:
            phone_numbers[convert.classify(pn.number, classifiers) or UNCLASSIFIED] += 1
        carriers[pn.carrier_module] += 1
        services.update(pn.features.keys())
    return {
        "phone_numbers": _sorted(phone_numbers),
        "number_carriers": _sorted(carriers),
        "number_services": _sorted(services),
        "billable": sum(phone_numbers.values()),
    }


def _sorted(counter: Mapping[str, int]) -> dict[str, int]:
    return {key: counter[key] for key in sorted(counter)}
