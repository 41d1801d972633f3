"""What the number rules know about carrier modules, without knowing the carriers.

A number names its carrier module (``pvt_carrier_module``), and a few rules depend on what that
module is: whether its numbers carry the ``local`` marker, whether it holds mobile numbers
(MDN), whether a release deletes its numbers, which module is the system's own. The carriers
describe themselves (class attributes in ``carriers/``); the carrier registry turns that into
one ``CarrierModules`` and the services hand it to the domain: a record built by
``PhoneNumber.new`` or ``PhoneNumber.from_document`` keeps it, so its marker, its MDN-ness and
the state table's release and creation rules follow its module. The domain never imports a
carrier, and no carrier module is named here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final


@dataclass(frozen=True)
class ModuleTraits:
    """The traits of one carrier module that number rules read."""

    #: Its numbers carry the ``local`` feature marker: not billed, no paid feature unless the
    #: system allows it, calls forced outbound per ``force_local_outbound``.
    local: bool = False
    #: Mobile numbers (MDN): created in service, changed only by an MDN run, never reserved,
    #: available, aging or porting.
    mobile: bool = False
    #: A release that leaves the number unassigned deletes it (instead of the pool).
    deleted_on_release: bool = False
    #: The system's own numbers: released from any state, ``local`` to call routing, the
    #: module of numbers created in ``port_in`` and of documents naming ``undefined``.
    home: bool = False


#: A module knm has no carrier for: nothing special about it (KAZOO does the same).
UNKNOWN_MODULE: Final[ModuleTraits] = ModuleTraits()


@dataclass(frozen=True)
class CarrierModules:
    """The registered modules' traits by name, with the home and default modules."""

    #: The system's own module (the one whose traits say ``home``; None: none registered).
    home: str | None
    #: The module of new numbers and of stored documents without one (``available_module_name``).
    default: str
    traits: Mapping[str, ModuleTraits] = field(default_factory=dict)
    #: Retired module -> the module that replaces it, for KAZOO documents.
    renamed: Mapping[str, str] = field(default_factory=dict)

    def of(self, module: str | None) -> ModuleTraits:
        """The traits of ``module``; a module knm does not know has none."""
        return self.traits.get(module, UNKNOWN_MODULE) if module else UNKNOWN_MODULE

    def migrate(self, name: str, *, kazoo: bool = True) -> str:
        """KAZOO's module migrations: ``wnm_X`` -> ``knm_X``, ``undefined`` -> the home module,
        and the renames carriers declare (a KAZOO document naming a retired module moves to
        the carrier that replaces it).

        ``kazoo=False`` is for knm's own ``pvt_carrier_module``: a number knm bought through a
        retired module stays with it (``knm carriers convert`` moves it).
        """
        if name == "undefined" and self.home is not None:
            return self.home
        if name.startswith("wnm_"):
            name = "knm_" + name[4:]
        if kazoo:
            return self.renamed.get(name, name)
        return name
