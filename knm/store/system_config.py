"""The system-level ``number_manager`` config that ``knm`` commands change at runtime.

KAZOO reads its system config from the ``system_config`` database. knm keeps the
keys operators change while the system runs in one MongoDB document, collection
``system_config``, ``_id`` ``number_manager``, under KAZOO's key names::

    {"_id": "number_manager",
     "features": {"allow": [...], "deny": [...]},
     "providers": [...],                       # KAZOO's legacy default of features.allow
     "cnam_provider": "knm_cnam_notifier", "e911_provider": "knm_telnyx_e911",
     "local_feature_override": false}

Every key is optional; an absent key falls back to the environment (``KNM_FEATURES_ALLOW``,
``KNM_FEATURES_DENY``, ``KNM_CNAM_PROVIDER``, ``KNM_E911_PROVIDER``,
``KNM_LOCAL_FEATURE_OVERRIDE``), then to KAZOO's defaults. Operations read the document once per
run (``Store.find_accounts_and_config``); the helpers below read and edit it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

from pymongo.database import Database

from config.settings import Settings

COLLECTION: Final[str] = "system_config"
DOC_ID: Final[str] = "number_manager"

ListName = Literal["allow", "deny"]


@dataclass(frozen=True)
class SystemConfig:
    """The effective system ``number_manager`` values the feature rules read."""

    #: ``features.allow``; None means KAZOO's default: every feature.
    features_allow: tuple[str, ...] | None = None
    #: ``features.deny``: denied on every number (None: nothing).
    features_deny: tuple[str, ...] | None = None
    cnam_provider: str = "knm_cnam_notifier"
    #: None: the number's carrier's own E911 provider, if it has one.
    e911_provider: str | None = None
    local_feature_override: bool = False

    @classmethod
    def from_document(cls, doc: Mapping[str, Any] | None, settings: Settings) -> SystemConfig:
        """The stored document's values, each falling back to the environment's."""
        doc = doc or {}
        features = doc.get("features")
        features = features if isinstance(features, Mapping) else {}
        allow = _names(features.get("allow"))
        if allow is None:
            allow = _names(doc.get("providers"))  # KAZOO's legacy default of features.allow
        if allow is None:
            allow = _names(settings.features_allow)
        deny = _names(features.get("deny"))
        if deny is None:
            deny = _names(settings.features_deny)
        override = doc.get("local_feature_override")
        return cls(
            features_allow=allow,
            features_deny=deny,
            cnam_provider=_text(doc.get("cnam_provider")) or settings.cnam_provider,
            e911_provider=_text(doc.get("e911_provider")) or settings.e911_provider,
            local_feature_override=(
                override if isinstance(override, bool) else settings.local_feature_override
            ),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "features": {
                "allow": list(self.features_allow) if self.features_allow is not None else None,
                "deny": list(self.features_deny) if self.features_deny is not None else None,
            },
            "cnam_provider": self.cnam_provider,
            "e911_provider": self.e911_provider,
            "local_feature_override": self.local_feature_override,
        }


def _names(value: Any) -> tuple[str, ...] | None:
    """A stored list of names (None when absent or not a list)."""
    if not isinstance(value, list | tuple):
        return None
    return tuple(str(v) for v in value if isinstance(v, str) and v)


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


# ------------------------------------------------------------------------------ read / edit
def stored_document(db: Database[dict[str, Any]]) -> dict[str, Any] | None:
    """The stored ``number_manager`` document, if any."""
    return db[COLLECTION].find_one({"_id": DOC_ID})


def load(db: Database[dict[str, Any]], settings: Settings) -> SystemConfig:
    """The effective system config (one read)."""
    return SystemConfig.from_document(stored_document(db), settings)


def set_feature_list(
    db: Database[dict[str, Any]], which: ListName, names: Iterable[str] | None
) -> None:
    """Replace ``features.<which>`` (sorted, unique); None removes it (back to the default)."""
    key = f"features.{which}"
    if names is None:
        db[COLLECTION].update_one({"_id": DOC_ID}, {"$unset": {key: ""}})
        return
    db[COLLECTION].update_one({"_id": DOC_ID}, {"$set": {key: sorted(set(names))}}, upsert=True)


def edit_feature_list(
    db: Database[dict[str, Any]],
    settings: Settings,
    which: ListName,
    feature: str,
    *,
    add: bool,
    all_features: Iterable[str],
) -> list[str]:
    """Add ``feature`` to (or remove it from) the effective ``features.<which>``; the new list.

    The list edited is the effective one: editing the allow list while it is unset starts from
    every feature (``all_features``), as KAZOO's maintenance commands do.
    """
    config = load(db, settings)
    current = config.features_allow if which == "allow" else config.features_deny
    if current is None:
        current = tuple(all_features) if which == "allow" else ()
    names = set(current) | {feature} if add else set(current) - {feature}
    set_feature_list(db, which, names)
    return sorted(names)


def set_value(db: Database[dict[str, Any]], key: str, value: Any) -> None:
    """Set (or, with None, unset) one top-level key such as ``e911_provider``."""
    if value is None:
        db[COLLECTION].update_one({"_id": DOC_ID}, {"$unset": {key: ""}})
        return
    db[COLLECTION].update_one({"_id": DOC_ID}, {"$set": {key: value}}, upsert=True)
