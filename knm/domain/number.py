"""The phone-number document and its in-memory record.

``PhoneNumber`` is what operations work on: the stored fields (knm's format),
the public fields, and a ``dirty`` flag. Every setter that *changes* a value marks the
record dirty and bumps ``modified``, because only dirty records are written and the aging
sweep reads ``pvt_modified`` as its clock. Public fields that could not be stored are refused
with 400 ``invalid_field`` (``knm.domain.public_fields``).

What the record's carrier module means (its ``local`` marker, MDN) comes from the
``CarrierModules`` it is built with (``knm.domain.carrier_modules``); this module names no carrier.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, ClassVar, Final

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from knm.domain.carrier_modules import UNKNOWN_MODULE, CarrierModules, ModuleTraits
from knm.domain.public_fields import (
    LEGACY_E911_KEYS,
    STRIPPED_PUBLIC_KEYS,
    check_public,
    deep_merge,
    is_non_empty,
    is_public_key,
    sanitize_public,
)


class NumberState(StrEnum):
    """Valid values of ``pvt_state``."""

    DISCOVERY = "discovery"
    AVAILABLE = "available"
    RESERVED = "reserved"
    IN_SERVICE = "in_service"
    PORT_IN = "port_in"
    PORT_OUT = "port_out"
    RELEASED = "released"
    AGING = "aging"
    DELETED = "deleted"


#: The ``pvt_features`` key marking a number of a local module (billing and features read it).
LOCAL_MARKER: Final[str] = "local"
NUMBER_TYPE: Final[str] = "number"

#: Seconds between year 0 (KAZOO's Gregorian seconds) and the Unix epoch.
GREGORIAN_UNIX_OFFSET: Final[int] = 62167219200


def utcnow() -> datetime:
    """Now, in UTC, at BSON's millisecond precision so a stored value round-trips exactly."""
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def from_gregorian_seconds(seconds: int) -> datetime:
    """KAZOO timestamps (seconds since year 0) as UTC datetimes."""
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(seconds=seconds - GREGORIAN_UNIX_OFFSET)


def to_gregorian_seconds(moment: datetime) -> int:
    """The inverse of :func:`from_gregorian_seconds` (KAZOO's CSV listing columns use it)."""
    return int(moment.timestamp()) + GREGORIAN_UNIX_OFFSET


def _is_true(value: Any) -> bool:
    """KAZOO's ``kz_term:is_true``: ``true`` or the string ``"true"``."""
    return value is True or value == "true"


def _legacy_feature_value(name: str, public: Mapping[str, Any]) -> tuple[str, Any]:
    """3.22 list-shaped ``pvt_features``: rebuild each feature from the public fields."""
    value: Any
    if name == "force_outbound":
        return name, _is_true(public.get("force_outbound"))
    if name in ("ringback", "failover"):
        keys = ("early", "transfer") if name == "ringback" else ("e164", "sip")
        data = _object(public.get(name))
        return name, {k: copy.deepcopy(data[k]) for k in keys if is_non_empty(data.get(k))}
    if name == "prepend":
        value = copy.deepcopy(_object(public.get("prepend")))
        value["enabled"] = _is_true(value.get("enabled"))
        return name, value
    if name == "outbound_cnam":
        display_name = _object(public.get("cnam")).get("display_name")
        has_name = isinstance(display_name, str) and display_name != ""
        return name, {"display_name": display_name} if has_name else {}
    if name == "inbound_lookup":
        return "inbound_cnam", {"inbound_lookup": True}
    if name in ("dash_e911", "vitelity_e911", "telnyx_e911"):
        return "e911", copy.deepcopy(public.get(name) or {})
    value = public.get(name)
    return name, copy.deepcopy(value) if is_non_empty(value) else {}


def _object(value: Any) -> dict[str, Any]:
    return dict(value) if isinstance(value, Mapping) else {}


class PhoneNumber(BaseModel):
    """One number: stored fields, public fields and the ``dirty`` flag."""

    model_config = ConfigDict(extra="forbid", validate_assignment=False)

    number: str
    state: NumberState | None = None
    assigned_to: str | None = None
    previously_assigned_to: str | None = None
    reserve_history: list[str] = Field(default_factory=list)
    used_by: str | None = None
    carrier_module: str = Field(default="", description="pvt_carrier_module; new() sets it.")
    carrier_data: dict[str, Any] = Field(default_factory=dict)
    ported_in: bool = False
    features: dict[str, Any] = Field(default_factory=dict)
    features_allowed: list[str] = Field(default_factory=list)
    features_denied: list[str] = Field(default_factory=list)
    region: str | None = None
    created: datetime = Field(default_factory=utcnow)
    modified: datetime = Field(default_factory=utcnow)
    rev: int | None = Field(default=None, description="Stored pvt_rev; None when never stored.")
    request_id: str | None = Field(
        default=None, description="pvt_request_id: the request that last wrote the document."
    )
    recent_requests: list[str] = Field(
        default_factory=list,
        description="pvt_request_ids: the last requests that wrote it, newest first (capped).",
    )
    public: dict[str, Any] = Field(default_factory=dict)

    _dirty: bool = PrivateAttr(default=False)
    _stored: bool = PrivateAttr(default=False)
    _deleted: bool = PrivateAttr(default=False)
    _loaded_doc: dict[str, Any] | None = PrivateAttr(default=None)
    _available_features: list[str] | None = PrivateAttr(default=None)
    #: What carrier modules mean (None: a record built directly, which knows no module).
    _modules: CarrierModules | None = PrivateAttr(default=None)

    # ----------------------------------------------------------------------------- construction
    @classmethod
    def new(cls, number: str, module: str | None = None, *, modules: CarrierModules) -> PhoneNumber:
        """A number not in the store yet, on ``module`` (default: the default module); always
        dirty."""
        pn = cls(number=number)
        pn._modules = modules
        pn._dirty = True
        pn._set_module(module or modules.default)
        return pn

    @classmethod
    def from_document(cls, doc: Mapping[str, Any], modules: CarrierModules) -> PhoneNumber:
        """Load a stored document, knm or KAZOO format, applying the migrations.

        The record is dirty exactly when KAZOO's loader would mark it so: missing or non-integer
        timestamps, the legacy ``pvt_number_state`` key, list-shaped ``pvt_features``, renamed
        legacy feature keys, module-name migrations and a public legacy-E911 copy.
        """
        # ``dirty`` migrations also move ``modified`` to now, as KAZOO's ?DIRTY does; the
        # reserve-history normalisation runs before KAZOO reads ``pvt_modified`` so it does not.
        dirty = False
        now = utcnow()

        raw_public = {k: v for k, v in doc.items() if is_public_key(k)}
        public = sanitize_public(raw_public)
        if {k: v for k, v in public.items()} != {
            k: v for k, v in raw_public.items() if k not in STRIPPED_PUBLIC_KEYS
        }:
            dirty = True  # the legacy E911 renaming added or changed "e911"

        created, created_dirty = _load_timestamp(doc.get("pvt_created"), now)
        modified, modified_dirty = _load_timestamp(doc.get("pvt_modified"), now)
        dirty = dirty or created_dirty or modified_dirty

        raw_history = [h for h in doc.get("pvt_reserve_history") or [] if isinstance(h, str)]
        history = _collapse_history(raw_history)
        history_dirty = history != list(doc.get("pvt_reserve_history") or [])

        raw_features = doc.get("pvt_features")
        features: dict[str, Any]
        if isinstance(raw_features, list) and raw_features:
            features = dict(_legacy_feature_value(str(n), public) for n in raw_features)
            dirty = True
        elif isinstance(raw_features, Mapping):
            features = copy.deepcopy(dict(raw_features))
            legacy_e911 = [features[k] for k in LEGACY_E911_KEYS if is_non_empty(features.get(k))]
            if legacy_e911:  # both legacy keys go; vitelity (listed last) wins
                for legacy in LEGACY_E911_KEYS:
                    features.pop(legacy, None)
                features["e911"] = legacy_e911[-1]
                dirty = True
        else:
            features = {}  # absent, null or an empty 3.22 list: nothing to migrate

        state_value = doc.get("pvt_state")
        if state_value is None:
            state_value = doc.get("pvt_number_state")
        if doc.get("pvt_number_state") is not None:
            dirty = True
        state = NumberState(state_value) if state_value is not None else None

        module_raw = doc.get("pvt_carrier_module", doc.get("pvt_module_name"))
        if isinstance(module_raw, str) and module_raw:
            module = modules.migrate(module_raw, kazoo="pvt_carrier_module" not in doc)
            dirty = dirty or module != module_raw
        else:
            module = modules.default

        rev = doc.get("pvt_rev")
        pn = cls(
            number=str(doc["_id"]),
            state=state,
            assigned_to=doc.get("pvt_assigned_to") or None,
            previously_assigned_to=doc.get("pvt_previously_assigned_to") or None,
            reserve_history=history,
            used_by=doc.get("pvt_used_by") or None,
            carrier_module=module,
            carrier_data=copy.deepcopy(dict(doc.get("pvt_carrier_data") or {})),
            ported_in=_is_true(doc.get("pvt_ported_in")),
            features=features,
            features_allowed=list(doc.get("pvt_features_allowed") or []),
            features_denied=list(doc.get("pvt_features_denied") or []),
            region=doc.get("pvt_region") or None,
            created=created,
            modified=modified,
            rev=rev if isinstance(rev, int) else None,
            request_id=doc.get("pvt_request_id") or None,
            recent_requests=[r for r in doc.get("pvt_request_ids") or [] if isinstance(r, str)],
            public=public,
        )
        pn._modules = modules
        loaded_features = copy.deepcopy(pn.features)
        pn._sync_local_marker()
        # Adding/removing the ``local`` marker only initialises an empty feature set silently.
        dirty = dirty or (bool(loaded_features) and loaded_features != pn.features)
        if dirty:
            pn.modified = now
        pn._stored = True
        pn._dirty = dirty or history_dirty
        pn._loaded_doc = copy.deepcopy(dict(doc))
        return pn

    #: How many of the requests that last wrote a document it remembers (redelivery checks).
    RECENT_REQUESTS: ClassVar[int] = 8

    def stamp_request(self, key: str) -> None:
        """Record that the request with ``key`` writes this document (not a change of its own).

        ``key`` is what ``written_by`` compares: ``<request id>/<scope>`` for a task's request
        (the scope digests its requester, operation and options), ``<job id>:<chunk>`` for a CSV
        chunk. ``pvt_request_id`` shows the request id its caller knows (before the ``/``);
        ``pvt_request_ids`` keeps the last keys.
        """
        self.request_id = key.split("/", 1)[0]
        self.recent_requests = [
            key,
            *(r for r in self.recent_requests if r != key),
        ][: self.RECENT_REQUESTS]

    def written_by(self, key: str) -> bool:
        """Whether the request with ``key`` is among those that last wrote this document.

        Only the keys count: ``pvt_request_id`` is the bare id, which another request's key
        (a CSV chunk's ``<job id>:<chunk>``) could spell.
        """
        return key in self.recent_requests

    # ----------------------------------------------------------------------------- flags
    @property
    def dirty(self) -> bool:
        """Whether the record differs from what is stored (only dirty records are written)."""
        return self._dirty

    @property
    def stored(self) -> bool:
        """Whether the record was loaded from the store (an insert is needed otherwise)."""
        return self._stored

    @property
    def deleted(self) -> bool:
        """Marked for hard deletion (KAZOO's in-memory ``deleted`` state)."""
        return self._deleted

    @property
    def module_traits(self) -> ModuleTraits:
        """What the record's carrier module is (nothing special when knm does not know it)."""
        return self._modules.of(self.carrier_module) if self._modules else UNKNOWN_MODULE

    @property
    def is_mdn(self) -> bool:
        """A mobile number: its module holds MDNs."""
        return self.module_traits.mobile

    @property
    def is_local(self) -> bool:
        """Local for features and billing: a local module, or carrying the ``local`` marker."""
        return self.module_traits.local or LOCAL_MARKER in self.features

    @property
    def available_features(self) -> list[str] | None:
        """The features this number may use, as its last operation computed (not stored)."""
        return None if self._available_features is None else list(self._available_features)

    def set_available_features(self, names: list[str]) -> None:
        """Record the available features; a transient, not a change."""
        self._available_features = list(names)

    def mark_deleted(self) -> None:
        """Hard delete: the record leaves the store and its in-memory state becomes ``deleted``."""
        self._deleted = True
        self.state = NumberState.DELETED

    def _touch(self) -> None:
        self._dirty = True
        self.modified = utcnow()

    # ----------------------------------------------------------------------------- setters
    def set_state(self, state: NumberState) -> None:
        if self.state != state:
            self.state = state
            self._touch()

    def set_assigned_to(self, account: str | None) -> None:
        """Changing the owner records the previous one and clears ``used_by``."""
        if self.assigned_to == account:
            return
        if self.assigned_to is not None:
            self.previously_assigned_to = self.assigned_to
        self.assigned_to = account
        self.used_by = None
        self._touch()

    def set_used_by(self, app: str | None) -> None:
        if self.used_by != (app or None):
            self.used_by = app or None
            self._touch()

    def set_carrier_module(self, module: str) -> None:
        """Setting the module also adds or removes the ``local`` feature marker."""
        if self._modules is None:
            raise ValueError(f"{self.number}: a record built without its carrier modules")
        module = self._modules.migrate(module)
        before = (self.carrier_module, copy.deepcopy(self.features))
        self._set_module(module)
        if before != (self.carrier_module, self.features):
            self._touch()

    def _set_module(self, module: str) -> None:
        self.carrier_module = module
        self._sync_local_marker()

    def _sync_local_marker(self) -> None:
        if self.module_traits.local:
            self.features.setdefault(LOCAL_MARKER, {})
        else:
            self.features.pop(LOCAL_MARKER, None)

    def set_ported_in(self, ported_in: bool) -> None:
        if self.ported_in != ported_in:
            self.ported_in = ported_in
            self._touch()

    def set_carrier_data(self, data: Mapping[str, Any]) -> None:
        if self.carrier_data != dict(data):
            self.carrier_data = copy.deepcopy(dict(data))
            self._touch()

    def set_features(self, features: Mapping[str, Any]) -> None:
        if self.features != dict(features):
            self.features = copy.deepcopy(dict(features))
            self._touch()

    def set_feature(self, name: str, value: Any) -> None:
        if name not in self.features or self.features[name] != value:
            self.features[name] = copy.deepcopy(value)
            self._touch()

    def remove_feature(self, name: str) -> None:
        if name in self.features:
            del self.features[name]
            self._touch()

    def set_features_allowed(self, names: list[str]) -> None:
        if sorted(set(self.features_allowed)) != sorted(set(names)):
            self.features_allowed = list(names)
            self._touch()

    def set_features_denied(self, names: list[str]) -> None:
        if sorted(set(self.features_denied)) != sorted(set(names)):
            self.features_denied = list(names)
            self._touch()

    def set_reserve_history(self, history: list[str]) -> None:
        history = _collapse_history(history)
        if self.reserve_history != history:
            self.reserve_history = history
            self._touch()

    def push_reserve_history(self, account: str | None) -> None:
        """Prepend the reserving account unless it already is the head."""
        if account is None or (self.reserve_history and self.reserve_history[0] == account):
            return
        self.set_reserve_history([account, *self.reserve_history])

    def set_region(self, region: str | None) -> None:
        if self.region != region:
            self.region = region
            self._touch()

    def reset_public(self, fields: Mapping[str, Any]) -> None:
        """KAZOO's reset_doc: the public part becomes the public fields of ``fields``."""
        public = sanitize_public(fields)
        if self.public != public:
            check_public(public)
            self.public = public
            self._touch()

    def update_public(self, fields: Mapping[str, Any]) -> None:
        """KAZOO's update_doc: deep-merge the public fields of ``fields`` into the public part."""
        given = sanitize_public(fields)
        public = sanitize_public(deep_merge(self.public, given))
        if self.public != public:
            check_public(given)  # the caller's own mistakes are named first
            check_public(public)
            self.public = public
            self._touch()

    # ----------------------------------------------------------------------------- serialization
    def to_document(self) -> dict[str, Any]:
        """The stored document; ``pvt_rev`` is set by the store."""
        doc: dict[str, Any] = copy.deepcopy(self.public)
        doc.update(
            {
                "_id": self.number,
                "pvt_type": NUMBER_TYPE,
                "pvt_state": self.state.value if self.state is not None else None,
                "pvt_carrier_module": self.carrier_module,
                "pvt_ported_in": self.ported_in,
                "pvt_created": self.created,
                "pvt_modified": self.modified,
            }
        )
        optional: dict[str, Any] = {
            "pvt_assigned_to": self.assigned_to,
            "pvt_previously_assigned_to": self.previously_assigned_to,
            "pvt_reserve_history": self.reserve_history,
            "pvt_used_by": self.used_by,
            "pvt_carrier_data": self.carrier_data,
            "pvt_features": self.features,
            "pvt_features_allowed": self.features_allowed,
            "pvt_features_denied": self.features_denied,
            "pvt_region": self.region,
        }
        for key, value in optional.items():
            if value not in (None, "", [], {}):
                doc[key] = copy.deepcopy(value)
        if self.rev is not None:
            doc["pvt_rev"] = self.rev
        if self.request_id is not None:
            doc["pvt_request_id"] = self.request_id
        if self.recent_requests:
            doc["pvt_request_ids"] = list(self.recent_requests)
        return doc

    def to_public_json(self, available_features: list[str] | None = None) -> dict[str, Any]:
        """What an API returns: public fields, id, state, used_by, features, _read_only.

        ``available_features`` defaults to what the last operation computed for this number.
        """
        if available_features is None:
            available_features = self._available_features
        out: dict[str, Any] = copy.deepcopy(self.public)
        out["id"] = self.number
        if self.state is not None:
            out["state"] = self.state.value
        if self.used_by:
            out["used_by"] = self.used_by
        if self.features:
            out["features"] = sorted(self.features)
        read_only: dict[str, Any] = {
            "created": self.created.isoformat(),
            "modified": self.modified.isoformat(),
            "features": {"available": list(available_features or []), "settings": {}},
            "carrier_module": self.carrier_module.removeprefix("knm_"),
        }
        if self.state == NumberState.DELETED:
            read_only["is_deleted"] = True
        out["_read_only"] = read_only
        return out


def _load_timestamp(value: Any, now: datetime) -> tuple[datetime, bool]:
    """Datetimes are kept; Gregorian-second integers convert; anything else is now and dirty."""
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)), False
    if isinstance(value, int) and not isinstance(value, bool):
        return from_gregorian_seconds(value), False
    return now, True


def _collapse_history(history: list[str]) -> list[str]:
    """Consecutive duplicates in the reserve history collapse to one."""
    out: list[str] = []
    for account in history:
        if not out or out[-1] != account:
            out.append(account)
    return out
