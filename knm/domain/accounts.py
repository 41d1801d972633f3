"""Accounts and the authorization model.

Accounts are few and small: an operation loads the ones it needs in one query into an
``AccountDirectory`` and every check below reads from it, so authorization costs no extra
round trips per number.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any, Final

from pydantic import BaseModel, Field

from knm.domain.number import NumberState, PhoneNumber, utcnow

SYSTEM: Final[str] = "system"
ACCOUNT_ID_RE: Final[re.Pattern[str]] = re.compile(r"^[0-9A-Za-z_]{32}$")

ADMIN_CREATION_STATES: Final[tuple[NumberState, ...]] = (
    NumberState.AGING,
    NumberState.AVAILABLE,
    NumberState.IN_SERVICE,
    NumberState.PORT_IN,
    NumberState.RESERVED,
)
ADDITIONS_CREATION_STATES: Final[tuple[NumberState, ...]] = (
    NumberState.IN_SERVICE,
    NumberState.RESERVED,
)


def is_account_id(value: object) -> bool:
    """KAZOO account ids are 32-character strings (hex in practice)."""
    return isinstance(value, str) and ACCOUNT_ID_RE.match(value) is not None


def bad_account_id(value: object) -> str:
    """The one-line message for a value that is not an account id."""
    return f"account id must be 32 letters, digits or '_': {value!r}"


class NumberManagerConfig(BaseModel):
    """Per-account ``number_manager`` settings."""

    carrier_modules: list[str] | None = None
    features_allow: list[str] | None = None
    features_deny: list[str] | None = None
    #: The CNAM / E911 provider modules of the numbers this reseller's accounts own.
    cnam_provider: str | None = None
    e911_provider: str | None = None


class Account(BaseModel):
    """An account: its place in the tree and the flags the number manager reads."""

    id: str
    name: str
    parent: str | None = None
    tree: list[str] = Field(default_factory=list, description="Ancestors, root first.")
    superduper_admin: bool = False
    allow_additions: bool = False
    is_reseller: bool = False
    reseller_id: str | None = None
    enabled: bool = True
    number_manager: NumberManagerConfig = Field(default_factory=NumberManagerConfig)
    created: datetime = Field(default_factory=utcnow)

    def to_document(self) -> dict[str, Any]:
        """Stored with KAZOO's private key names so KAZOO-minded tools read it the same way."""
        nm: dict[str, Any] = {}
        if self.number_manager.carrier_modules is not None:
            nm["carrier_modules"] = self.number_manager.carrier_modules
        features: dict[str, Any] = {}
        if self.number_manager.features_allow is not None:
            features["allow"] = self.number_manager.features_allow
        if self.number_manager.features_deny is not None:
            features["deny"] = self.number_manager.features_deny
        if features:
            nm["features"] = features
        for key in ("cnam_provider", "e911_provider"):
            value = getattr(self.number_manager, key)
            if value is not None:
                nm[key] = value
        return {
            "_id": self.id,
            "name": self.name,
            "pvt_type": "account",
            "pvt_parent": self.parent,
            "pvt_tree": self.tree,
            "pvt_superduper_admin": self.superduper_admin,
            "pvt_wnm_allow_additions": self.allow_additions,
            "pvt_reseller": self.is_reseller,
            "pvt_reseller_id": self.reseller_id,
            "pvt_enabled": self.enabled,
            "pvt_created": self.created,
            "number_manager": nm,
        }

    @classmethod
    def from_document(cls, doc: Mapping[str, Any]) -> Account:
        nm = doc.get("number_manager") or {}
        features = nm.get("features") or {}
        return cls(
            id=str(doc["_id"]),
            name=str(doc.get("name", "")),
            parent=doc.get("pvt_parent"),
            tree=list(doc.get("pvt_tree") or []),
            superduper_admin=bool(doc.get("pvt_superduper_admin", False)),
            allow_additions=bool(doc.get("pvt_wnm_allow_additions", False)),
            is_reseller=bool(doc.get("pvt_reseller", False)),
            reseller_id=doc.get("pvt_reseller_id"),
            enabled=bool(doc.get("pvt_enabled", True)),
            number_manager=NumberManagerConfig(
                carrier_modules=nm.get("carrier_modules"),
                features_allow=features.get("allow"),
                features_deny=features.get("deny"),
                cnam_provider=nm.get("cnam_provider") or None,
                e911_provider=nm.get("e911_provider") or None,
            ),
            created=doc.get("pvt_created") or utcnow(),
        )

    def to_json(self) -> dict[str, Any]:
        """The CLI's ``--json`` form."""
        return {
            "id": self.id,
            "name": self.name,
            "parent": self.parent,
            "tree": self.tree,
            "superduper_admin": self.superduper_admin,
            "allow_additions": self.allow_additions,
            "is_reseller": self.is_reseller,
            "reseller_id": self.reseller_id,
            "enabled": self.enabled,
            "number_manager": self.number_manager.model_dump(exclude_none=True),
            "created": self.created.isoformat(),
        }


class AccountDirectory:
    """The accounts one operation needs, loaded once; ids without a document are unknown."""

    def __init__(self, accounts: Iterable[Account] = ()) -> None:
        self._accounts: dict[str, Account] = {a.id: a for a in accounts}

    def get(self, account_id: str | None) -> Account | None:
        return self._accounts.get(account_id) if account_id else None

    def add(self, account: Account) -> None:
        self._accounts[account.id] = account

    def __contains__(self, account_id: object) -> bool:
        return account_id in self._accounts

    # ------------------------------------------------------------------------------- authorization
    def is_admin(self, auth_by: str | None) -> bool:
        """``system`` or a superduper-admin account."""
        if auth_by == SYSTEM:
            return True
        account = self.get(auth_by)
        return account is not None and account.superduper_admin

    def is_ancestor_or_self(self, ancestor: str, account_id: str) -> bool:
        """``ancestor`` equals ``account_id`` or appears in its ``pvt_tree``."""
        if ancestor == account_id:
            return True
        account = self.get(account_id)
        return account is not None and ancestor in account.tree

    def is_authorized(self, pn: PhoneNumber, auth_by: str | None, assign_to: str | None) -> bool:
        """May ``auth_by`` manage this number (for ``assign_to`` when it is unassigned)?"""
        if auth_by == SYSTEM:
            return True
        if auth_by is None:
            return False
        if self.is_admin(auth_by):
            return True
        owner = pn.assigned_to if pn.assigned_to is not None else assign_to
        if owner is None:
            return False
        return self.is_ancestor_or_self(auth_by, owner)

    def refusal(self, pn: PhoneNumber, auth_by: str | None, assign_to: str | None) -> str:
        """Why ``is_authorized`` says no, naming the account relation it wanted."""
        owner = pn.assigned_to if pn.assigned_to is not None else assign_to
        if auth_by is None:
            return "the requester is unknown"
        if owner is None:
            return (
                f"number {pn.number} is assigned to no account: only system or a superduper "
                "admin may do this"
            )
        return (
            f"account '{auth_by}' is not '{owner}' or one of its ancestors "
            "(nor system or a superduper admin)"
        )

    def visibility_refusal(self, pn: PhoneNumber, auth_by: str | None) -> str:
        """Why ``is_visible`` says no (the number is not available, so the relation counts)."""
        state = pn.state.value if pn.state is not None else "(no state)"
        if auth_by is None:
            return f"number {pn.number} is {state} and the requester is unknown"
        owner = pn.assigned_to or "(nobody)"
        return (
            f"number {pn.number} is {state} and account '{auth_by}' is not its account "
            f"'{owner}' or one of its ancestors (nor system or a superduper admin)"
        )

    def is_reserved_from_parent(self, pn: PhoneNumber, auth_by: str | None) -> bool:
        """A descendant may take a number its ancestor (or a superduper admin) reserved."""
        if pn.state != NumberState.RESERVED or pn.assigned_to is None:
            return False
        owner = self.get(pn.assigned_to)
        if owner is not None and owner.superduper_admin:
            return True
        if auth_by is None or auth_by == SYSTEM:
            return False
        return self.is_ancestor_or_self(pn.assigned_to, auth_by)

    def is_visible(self, pn: PhoneNumber, auth_by: str | None, assign_to: str | None) -> bool:
        """Fetch visibility: available numbers are public, others need authorization."""
        return (
            pn.state == NumberState.AVAILABLE
            or self.is_authorized(pn, auth_by, assign_to)
            or self.is_reserved_from_parent(pn, auth_by)
        )

    def allowed_creation_states(self, auth_by: str | None) -> tuple[NumberState, ...]:
        """Admins may create in any pool state; accounts allowed additions in two."""
        if auth_by is None:
            return ()
        if self.is_admin(auth_by):
            return ADMIN_CREATION_STATES
        account = self.get(auth_by)
        if account is not None and account.allow_additions:
            return ADDITIONS_CREATION_STATES
        return ()

    def may_choose_carrier(self, auth_by: str | None) -> bool:
        """Only ``system`` or a superduper admin names the carrier module of a number.

        The module decides which provider knm believes owns the number (and which one a release
        calls), so an account naming one could claim a provider's number it never bought.
        """
        return self.is_admin(auth_by)

    def may_read_account(self, auth_by: str | None, account_id: str) -> bool:
        """May ``auth_by`` read what belongs to ``account_id`` (its numbers, its jobs)?

        The relation of ``numbers get``: ``system``, a superduper admin, the account itself or
        one of its ancestors; a sibling or a descendant may not.
        """
        if auth_by is None:
            return False
        return self.is_admin(auth_by) or self.is_ancestor_or_self(auth_by, account_id)

    def reseller_of(self, account_id: str | None) -> str | None:
        """The account's reseller id (itself when it has none recorded)."""
        account = self.get(account_id)
        if account is None:
            return None
        return account.reseller_id or account.id
