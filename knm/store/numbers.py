"""The MongoDB store.

One ``numbers`` collection keyed by E.164 ``_id``; a batch reads with one ``find`` and writes with
one ``bulk_write``. Every write is conditional on the ``pvt_rev`` that was read: replacements use
``upsert`` so that a moved revision surfaces as a duplicate-key error *with the operation's index*
(plain bulk results only give totals), and the operation layer re-runs those numbers on the fresh
documents. No write ever overwrites a revision it did not read.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Final

import bson
from bson.errors import InvalidDocument
from pymongo import ASCENDING, DeleteOne, InsertOne, MongoClient, ReplaceOne
from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import BulkWriteError

from config.settings import Settings
from knm.domain import errors
from knm.domain.accounts import Account
from knm.domain.errors import KnmError
from knm.domain.number import PhoneNumber, utcnow
from knm.store import job_retention, read_once, system_config

DUPLICATE_KEY: Final[int] = 11000
#: The largest document MongoDB stores (BSON).
MAX_DOCUMENT_BYTES: Final[int] = 16 * 1024 * 1024

#: Port-request states during which a number may not be created.
ACTIVE_PORT_STATES: Final[tuple[str, ...]] = ("unconfirmed", "pending", "submitted", "scheduled")

Document = dict[str, Any]

#: The ``read_once`` kind under which an operation's accounts are handed to the next
#: ``find_accounts`` of the same task (a CSV chunk's listing names its rows' owners).
OPERATION_ACCOUNTS: Final[str] = "operation_accounts"
#: The ``read_once`` kind under which a share read (``knm.store.share_reads``) hands the system
#: config to ``find_accounts_and_config`` (with the accounts, kind ``accounts``).
CONFIG_KIND: Final[str] = "system_config"


@dataclass
class CommitResult:
    """What a bulk write did: numbers to re-run (revision moved) and numbers that failed."""

    conflicts: set[str] = field(default_factory=set)
    failed: dict[str, KnmError] = field(default_factory=dict)


def chunked(values: Iterable[Any], size: int | None) -> Iterator[list[Any]]:
    """``values`` without duplicates, in lists of at most ``size`` (all at once when None)."""
    wanted = list(dict.fromkeys(values))
    step = size or len(wanted) or 1
    for i in range(0, len(wanted), step):
        yield wanted[i : i + step]


def find_in(
    collection: Collection[Document],
    field: str,
    values: Iterable[Any],
    max_in: int | None,
    extra: Document | None = None,
    projection: Document | None = None,
) -> Iterator[Document]:
    """Documents whose ``field`` is in ``values``: one query, or one per chunk of ``max_in``.

    Each query asks for a first batch as large as its list (plus one, so the server knows the
    cursor is exhausted): a ``find`` answers 101 documents by default and a ``getMore`` the rest.
    """
    for chunk in chunked(values, max_in):
        query: Document = {field: {"$in": chunk}}
        if extra:
            query.update(extra)
        yield from collection.find(query, projection, batch_size=len(chunk) + 1)


def unwritable(doc: Document) -> str | None:
    """Why ``doc`` cannot be written (a ``$`` key at the top, a key or value BSON cannot hold,
    more than ``MAX_DOCUMENT_BYTES``), or None. pymongo refuses such a document for the whole
    bulk write it is in, so each one is checked first and fails alone."""
    dollars = [key for key in doc if isinstance(key, str) and key.startswith("$")]
    if dollars:
        return f"field {dollars[0]!r} starts with '$'"
    try:
        size = len(bson.encode(doc))
    except (InvalidDocument, OverflowError, TypeError, ValueError) as exc:
        return f"the document cannot be stored: {exc}"
    if size > MAX_DOCUMENT_BYTES:
        return f"the document is {size} bytes, more than the {MAX_DOCUMENT_BYTES} allowed"
    return None


def _rev_filter(number: str, rev: int | None) -> Document:
    return {"_id": number, "pvt_rev": rev if rev is not None else {"$exists": False}}


class Store:
    """knm's collections and the queries the operations make."""

    def __init__(self, db: Database[Document], max_in: int | None = None) -> None:
        self.db = db
        self.max_in = max_in
        self.numbers: Collection[Document] = db["numbers"]
        self.accounts: Collection[Document] = db["accounts"]
        self.port_requests: Collection[Document] = db["port_requests"]
        self.search_cache: Collection[Document] = db["search_cache"]
        self.tombstones: Collection[Document] = db["tombstones"]

    def ensure_indexes(self) -> None:
        """Indexes for every query the operations, carriers and sweeps make."""
        self.numbers.create_index(
            [("pvt_state", ASCENDING), ("pvt_carrier_module", ASCENDING), ("_id", ASCENDING)],
            name="state_module_id",
        )
        self.numbers.create_index(
            [("pvt_assigned_to", ASCENDING), ("pvt_state", ASCENDING), ("_id", ASCENDING)],
            name="assigned_state_id",
        )
        self.numbers.create_index(
            [("pvt_state", ASCENDING), ("pvt_modified", ASCENDING)], name="state_modified"
        )
        self.numbers.create_index([("pvt_carrier_module", ASCENDING)], name="carrier_module")
        self.accounts.create_index([("pvt_tree", ASCENDING)], name="tree")
        self.port_requests.create_index(
            [("numbers", ASCENDING), ("pvt_port_state", ASCENDING)], name="numbers_state"
        )
        self.search_cache.create_index("expires_at", expireAfterSeconds=0, name="ttl")
        self.search_cache.create_index("discovery_numbers", name="discovery_numbers")
        self.search_cache.create_index([("query_id", ASCENDING), ("part", ASCENDING)], name="query")
        self.db["request_outcomes"].create_index("expires_at", expireAfterSeconds=0, name="ttl")
        self.db["request_outcomes"].create_index("request_id", name="request_id")
        self.db["request_keys"].create_index("expires_at", expireAfterSeconds=0, name="ttl")
        self.tombstones.create_index("expires_at", expireAfterSeconds=0, name="ttl")
        self.db["jobs"].create_index([("created", ASCENDING)], name="created")
        job_retention.ensure_indexes(self.db)
        self.db["job_rows"].create_index(
            [("job_id", ASCENDING), ("chunk", ASCENDING), ("row", ASCENDING)], name="job_chunk_row"
        )
        self.db["job_rows"].create_index(
            [("job_id", ASCENDING), ("row", ASCENDING)], name="job_row"
        )
        self.db["provisioning"].create_index(
            [("status", ASCENDING), ("module", ASCENDING)], name="status_module"
        )
        self.db["provisioning"].create_index("request_id", name="request_id")
        self.db["dead_letters"].create_index("request_id", name="request_id")
        self.db["dead_letters"].create_index("updated", name="updated")
        for inventory in ("numbers_managed", "numbers_inum"):
            self.db[inventory].create_index(
                [("pvt_account_id", ASCENDING), ("pvt_state", ASCENDING), ("_id", ASCENDING)],
                name="account_state_id",
            )

    # ------------------------------------------------------------------------------ numbers
    def find_numbers(self, numbers: Iterable[str]) -> dict[str, Document]:
        """The stored documents of ``numbers`` (missing ones are absent), in one query (none
        when the dispatch of this very share just read them: ``read_once``)."""
        wanted = list(numbers)
        reused = read_once.take("numbers", wanted)
        if reused is not None:
            return reused
        return {doc["_id"]: doc for doc in find_in(self.numbers, "_id", wanted, self.max_in)}

    def commit(self, pns: Sequence[PhoneNumber]) -> CommitResult:
        """Write dirty and deleted records in one conditional bulk write.

        Records that are neither dirty nor deleted are skipped. On success a record's ``rev``
        moves forward and it is clean again. A document that cannot be written (``unwritable``)
        fails its own number; the others are written.
        """
        ops: list[InsertOne[Document] | ReplaceOne[Document] | DeleteOne] = []
        targets: list[PhoneNumber] = []
        deletes: list[PhoneNumber] = []
        result = CommitResult()
        for pn in pns:
            if pn.deleted:
                if pn.stored:
                    ops.append(DeleteOne(_rev_filter(pn.number, pn.rev)))
                    targets.append(pn)
                    deletes.append(pn)
                continue
            if not pn.dirty:
                continue
            doc = pn.to_document()
            doc["pvt_rev"] = (pn.rev or 0) + 1
            problem = unwritable(doc)
            if problem is not None:
                result.failed[pn.number] = errors.unspecified("database_error", problem)
                continue
            if pn.stored:
                ops.append(ReplaceOne(_rev_filter(pn.number, pn.rev), doc, upsert=True))
            else:
                ops.append(InsertOne(doc))
            targets.append(pn)
        if not ops:
            return result

        write_errors: list[Document] = []
        upserted: list[Document] = []
        removed = 0
        try:
            bulk = self.numbers.bulk_write(ops, ordered=False)
            upserted = bulk.bulk_api_result.get("upserted", [])
            removed = bulk.deleted_count
        except BulkWriteError as exc:
            write_errors = exc.details.get("writeErrors", [])
            upserted = exc.details.get("upserted", [])
            removed = exc.details.get("nRemoved", 0)

        for err in write_errors:
            pn = targets[err["index"]]
            if err.get("code") == DUPLICATE_KEY:
                result.conflicts.add(pn.number)
            else:
                result.failed[pn.number] = errors.unspecified("database_error", err.get("errmsg"))

        # An upsert where a stored document was expected: someone hard-deleted it meanwhile.
        # Undo our resurrection and let the operation re-run on the absent number.
        resurrected = [targets[u["index"]] for u in upserted]
        if resurrected:
            for pn in resurrected:
                self.numbers.delete_one({"_id": pn.number, "pvt_rev": (pn.rev or 0) + 1})
            result.conflicts.update(pn.number for pn in resurrected)

        # DeleteOne reports only a total: when it falls short, see which documents remain.
        if deletes and removed < len(deletes):
            ids = [pn.number for pn in deletes]
            for doc in find_in(self.numbers, "_id", ids, self.max_in, projection={"_id": 1}):
                result.conflicts.add(doc["_id"])

        for pn in targets:
            if pn.number in result.conflicts or pn.number in result.failed or pn.deleted:
                continue
            pn.rev = (pn.rev or 0) + 1
            pn._stored = True
            pn._dirty = False
        return result

    # ------------------------------------------------------------------------------ tombstones
    def put_tombstones(self, pns: Sequence[PhoneNumber], request_id: str, ttl_s: int) -> None:
        """Remember, before deleting them, which numbers a request hard-deletes.

        A rerun of the request (a redelivered task) finds a tombstone instead of the document
        and reports the deletion it already did, rather than ``not_found``.
        """
        if not pns:
            return
        now = utcnow()
        expires = now + timedelta(seconds=ttl_s)
        self.tombstones.bulk_write(
            [
                ReplaceOne(
                    {"_id": pn.number},
                    {
                        "request_id": request_id,
                        "doc": pn.to_document(),
                        "deleted": now,
                        "expires_at": expires,
                    },
                    upsert=True,
                )
                for pn in pns
            ],
            ordered=False,
        )

    def find_tombstones(self, numbers: Iterable[str], request_id: str) -> dict[str, Document]:
        """The last documents of ``numbers`` that request ``request_id`` deleted."""
        return {
            doc["_id"]: doc["doc"]
            for doc in find_in(
                self.tombstones, "_id", numbers, self.max_in, {"request_id": request_id}
            )
        }

    # ------------------------------------------------------------------------------ accounts
    def find_accounts(self, ids: Iterable[str | None]) -> list[Account]:
        """The accounts among ``ids`` that exist, in one query."""
        wanted = [i for i in dict.fromkeys(ids) if i]
        if not wanted:
            return []
        reused = read_once.take(OPERATION_ACCOUNTS, wanted)
        if reused is not None:  # the operation that just ran read them (a CSV chunk's names)
            return list(reused.values())
        found = self.accounts.find({"_id": {"$in": wanted}}, batch_size=len(wanted) + 1)
        return [Account.from_document(d) for d in found]

    def find_accounts_and_config(
        self, ids: Iterable[str | None]
    ) -> tuple[list[Account], Document | None]:
        """The accounts among ``ids``, their resellers and the system config, in one query.

        The feature rules read the reseller's ``number_manager`` and the system's:
        one aggregation joins each account's reseller and appends the ``system_config``
        document, so an operation still costs one round trip for its accounts.
        """
        wanted = [i for i in dict.fromkeys(ids) if i]
        reused = read_once.take("accounts", wanted)
        if reused is not None:  # the share read just read them (and the config)
            config_read = read_once.take(CONFIG_KIND, [system_config.DOC_ID])
            if config_read is not None:
                accounts = _accounts(reused.values())
                read_once.remember(OPERATION_ACCOUNTS, wanted, {a.id: a for a in accounts})
                return accounts, config_read.get(system_config.DOC_ID)
        pipeline: list[Document] = [
            {"$match": {"_id": {"$in": wanted}}},
            {
                "$lookup": {
                    "from": self.accounts.name,
                    "localField": "pvt_reseller_id",
                    "foreignField": "_id",
                    "as": "_resellers",
                }
            },
            {
                "$unionWith": {
                    "coll": system_config.COLLECTION,
                    "pipeline": [
                        {"$match": {"_id": system_config.DOC_ID}},
                        {"$addFields": {"_system_config": True}},
                    ],
                }
            },
        ]
        docs: list[Document] = []
        config: Document | None = None
        # each account, its reseller and the system config in the first batch
        for doc in self.accounts.aggregate(pipeline, batchSize=2 * len(wanted) + 2):
            if doc.pop("_system_config", False) is True:
                config = doc
            else:
                docs.append(doc)
        accounts = _accounts(docs)
        read_once.remember(OPERATION_ACCOUNTS, wanted, {a.id: a for a in accounts})
        return accounts, config

    def get_account(self, account_id: str) -> Account | None:
        doc = self.accounts.find_one({"_id": account_id})
        return Account.from_document(doc) if doc else None

    def insert_account(self, account: Account) -> None:
        self.accounts.insert_one(account.to_document())

    # ------------------------------------------------------------------------------ ports
    def numbers_in_active_ports(self, numbers: Iterable[str]) -> set[str]:
        """Which of ``numbers`` are listed in an active port request."""
        ids = set(numbers)
        found: set[str] = set()
        active = {"pvt_port_state": {"$in": list(ACTIVE_PORT_STATES)}}
        for doc in find_in(self.port_requests, "numbers", ids, self.max_in, active, {"numbers": 1}):
            found.update(n for n in doc.get("numbers", []) if n in ids)
        return found


def _accounts(docs: Iterable[Document]) -> list[Account]:
    """Accounts read with their resellers (``_resellers``): each account once."""
    accounts: dict[str, Account] = {}
    for doc in docs:
        doc = dict(doc)
        for reseller in doc.pop("_resellers", None) or []:
            accounts.setdefault(str(reseller["_id"]), Account.from_document(reseller))
        accounts[str(doc["_id"])] = Account.from_document(doc)
    return list(accounts.values())


def connect(settings: Settings) -> Store:
    """Open the configured store, or the embedded one under ``data_dir`` when none is set."""
    url = settings.mongodb_url
    max_in = settings.mongodb_max_in
    if not url:
        from knm.store.embedded import ensure_server

        url = ensure_server(settings.data_dir)
    client: MongoClient[Document] = MongoClient(
        url, tz_aware=True, serverSelectionTimeoutMS=settings.mongodb_timeout_ms
    )
    store = Store(client[settings.mongodb_db], max_in=max_in)
    try:
        store.ensure_indexes()
    except BaseException:
        client.close()
        raise
    return store
