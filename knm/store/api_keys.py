"""API keys of the HTTP API: the ``api_keys`` collection.

A key is shown once, when it is created; only its SHA-256 digest is stored (as ``_id``), so a
copy of the database gives nobody a usable key. A key belongs to one account, which is the
requester (``auth_by``) of every request made with it. Revoking a key keeps its record (who had
it, when it stopped working) and makes it fail authentication at once.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from pymongo import ASCENDING
from pymongo.collection import Collection
from pymongo.database import Database

COLLECTION: Final[str] = "api_keys"
#: Random bytes of a key (``secrets.token_urlsafe``): 256 bits.
KEY_BYTES: Final[int] = 32


def digest(key: str) -> str:
    """The stored form of a key: its SHA-256, hex."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class ApiKey:
    """A key's record, never the key itself."""

    id: str
    account_id: str
    name: str | None
    created: datetime
    revoked: datetime | None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "account_id": self.account_id,
            "name": self.name,
            "created": self.created.isoformat(),
            "revoked": self.revoked.isoformat() if self.revoked else None,
        }

    @classmethod
    def from_document(cls, doc: dict[str, Any]) -> ApiKey:
        return cls(
            id=doc["key_id"],
            account_id=doc["account_id"],
            name=doc.get("name"),
            created=_aware(doc["created"]),
            revoked=_aware(doc["revoked"]) if doc.get("revoked") else None,
        )


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


class ApiKeyStore:
    """Create, find, list and revoke keys."""

    def __init__(self, db: Database[dict[str, Any]]) -> None:
        self.collection: Collection[dict[str, Any]] = db[COLLECTION]

    def ensure_indexes(self) -> None:
        self.collection.create_index([("key_id", ASCENDING)], name="key_id", unique=True)
        self.collection.create_index([("account_id", ASCENDING)], name="account_id")

    def create(self, account_id: str, name: str | None = None) -> tuple[str, ApiKey]:
        """A new key for ``account_id``: ``(the key, its record)``; the key is never stored."""
        key = secrets.token_urlsafe(KEY_BYTES)
        record = ApiKey(
            id=uuid.uuid4().hex[:12],
            account_id=account_id,
            name=name,
            created=datetime.now(UTC),
            revoked=None,
        )
        self.collection.insert_one(
            {
                "_id": digest(key),
                "key_id": record.id,
                "account_id": account_id,
                "name": name,
                "created": record.created,
                "revoked": None,
            }
        )
        return key, record

    def account_of(self, key: str) -> str | None:
        """The account of a valid, unrevoked key, else None (one read by digest)."""
        doc = self.collection.find_one({"_id": digest(key)}, {"account_id": 1, "revoked": 1})
        if doc is None or doc.get("revoked"):
            return None
        account = doc.get("account_id")
        return account if isinstance(account, str) else None

    def account_with_accounts(
        self, key: str, account_id: str | None, accounts: str = "accounts"
    ) -> tuple[str | None, list[dict[str, Any]]]:
        """The account of a valid, unrevoked key (else None) and, in the same round trip, the
        documents of that account and of ``account_id`` that exist: a route under
        ``/v2/accounts/{A}`` needs both: one aggregate, joined on ``_id`` (from the index on
        MongoDB, by primary key on the embedded engine), instead of a second read."""
        wanted: list[Any] = ["$account_id", account_id] if account_id else ["$account_id"]
        pipeline: list[dict[str, Any]] = [
            {"$match": {"_id": digest(key)}},
            {"$project": {"account_id": 1, "revoked": 1, "_wanted": wanted}},
            {
                "$lookup": {
                    "from": accounts,
                    "localField": "_wanted",
                    "foreignField": "_id",
                    "as": "_accounts",
                }
            },
        ]
        doc = next(iter(self.collection.aggregate(pipeline)), None)
        if doc is None or doc.get("revoked"):
            return None, []
        account = doc.get("account_id")
        if not isinstance(account, str):
            return None, []
        return account, list(doc.get("_accounts") or [])

    def list(self, account_id: str | None = None) -> list[ApiKey]:
        """Every key's record (of one account when given), oldest first."""
        query: dict[str, Any] = {} if account_id is None else {"account_id": account_id}
        found = self.collection.find(query, {"_id": 0}).sort("created", ASCENDING)
        return [ApiKey.from_document(doc) for doc in found]

    def revoke(self, key_id: str) -> ApiKey | None:
        """Revoke a key by its id (not the key); None when no key has that id."""
        doc = self.collection.find_one({"key_id": key_id}, {"_id": 0})
        if doc is None:
            return None
        if not doc.get("revoked"):
            now = datetime.now(UTC)
            self.collection.update_one({"key_id": key_id}, {"$set": {"revoked": now}})
            doc["revoked"] = now
        return ApiKey.from_document(doc)
