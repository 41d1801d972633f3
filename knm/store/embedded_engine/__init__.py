"""The embedded store's engine: mongoeco's SQLite engine, adapted to cost O(1) per row.

mongoeco (pinned to :data:`MONGOECO_VERSION`) is a faithful MongoDB emulator, but several of its
SQLite paths cost time proportional to the whole collection on every operation, which makes an
import of N rows cost O(N^2):

1. **Inserting a string ``_id``** scans and JSON-decodes every document to compare ``_id`` values
   (``_validate_document_against_unique_indexes(..., scan_payload_id=True)``): the scan exists
   for numeric ids (``1`` equals ``1.0``); a string equals only the same string, which the
   primary-key check by storage key already refuses. Skipped for string ids.
2. **A query on ``_id``** (``{_id: X, pvt_rev: 3}``, ``{_id: {$in: [...]}}``, the conditional
   updates of every knm write) is translated to ``json_extract(document, '$._id') = ?``: a scan.
   Here a filter whose top level pins ``_id`` to strings reads just those rows by primary key
   (``storage_key IN (SELECT value FROM json_each(?))``, no size limit) and decides the rest of
   the filter with mongoeco's own matcher (:func:`QueryEngine.match_plan`, through the SQLite
   function ``knm_match``), so the result is exactly mongoeco's.
3. **Planner probes** ("does any document of the collection hold an array / a decimal / ... at
   this field?") are full scans whose cached answers every write throws away. Here writes are
   logged (a temporary trigger per connection) and a cached answer is re-checked against only
   the rows written since: a probe asks whether *some* document has a property, so a ``True``
   stays ``True`` (the plan it leads to is the general, always-correct one) and a ``False`` needs
   only the new rows checked.
4. **Large ``$in`` lists** become one long ``OR`` chain, which SQLite refuses past ~500 values
   ("Expression tree is too large") and plans anew each time (a thousand values: a statement
   of 250 KB). Here a list of strings is tested against the set of values, written once
   (``IN (SELECT value FROM json_each(?))``); any other long list is split into groups joined
   as a balanced tree.
5. **The wire ``insert`` command** inserts its documents one ``insert_one`` (one transaction)
   each. Here a command whose documents all have string ``_id`` values goes through mongoeco's own
   ``insert_many`` (its batch path: one transaction), with the same per-index write errors.
6. **Change publication**: every write appends to a durable change outbox and then takes a
   dispatch lease (commits, a heartbeat thread) to deliver it to the change-stream hub. knm never
   opens a change stream and needs no durable change history, so this engine declares no outbox
   (``change_delivery="none"``): mongoeco then hands changes to the hub in-process.

7. **Batched writes** (:mod:`.batched`): every statement of a wire ``update`` runs in one SQLite
   transaction (each its own savepoint), not one transaction per statement; a command whose
   statements all ``$set`` top-level, unindexed fields of one document pinned by a string
   ``_id`` (knm's job row results) is applied directly, without mongoeco's per-statement
   compiling and SQL translation.
8. **The document encoder** (:mod:`.codec`) validates each value once instead of once per level
   of nesting; its result is mongoeco's.
9. **Each collection's indexes** (:mod:`.scoped_indexes`) are partial, limited to its own
   documents, so a write maintains only the indexes of the collection it writes.
10. **Index ranges** (:mod:`.index_ranges`): a find whose filter pins a leading index field to
    a string or bounds it by a date (the sweeps' ``{pvt_state, pvt_modified}``) gets the same
    conditions in the index's terms, implied by the filter, and reads the index range in order
    instead of every document of the collection.
11. **No thread hand-off**: mongoeco runs each command's SQLite work on a thread pool and awaits
    it; the server is one process whose Python work the GIL serializes anyway, and the hand-off
    (a future, a thread switch, a context copy per call) cost a quarter to a third of its CPU
    under concurrent clients. Here the work runs inline on the server's event loop, as batched
    writes (7) already did; a command is no longer interleaved with another's Python work.
12. **Joins by ``_id``** (:mod:`.joins`): mongoeco reads every document of a collection an
    aggregation joins (``$lookup``, ``$unionWith``) before it runs, so a read joining a number's
    owner decoded every account. Here a joined collection is read when a stage asks, and a join
    that pins its documents by ``_id`` (a ``$lookup`` on ``_id``, a ``$unionWith`` whose pipeline
    starts by matching ``_id``) reads just those, by primary key; the stage runs as mongoeco wrote
    it, over every document it could match.
13. **Pooled readers** (:mod:`.readers`): mongoeco opens a SQLite connection for every read of
    more than one document and closes it after; connecting, and SQLite parsing the schema again
    on the connection's first statement, cost more than a small read. Here a closed reader's
    connection is kept (up to eight) and handed to the next reader as a new one would start: no
    open statement, transaction, deadline handler or cached catalog.

Everything else is mongoeco's. :data:`PATCHED_SOURCES` pins the source of every mongoeco function
these adaptations rely on; ``tests/unit/test_embedded_engine.py`` fails when an upgrade changes
one of them, so the adaptation is re-checked before the pin moves.

The engine also counts its work (:class:`EngineCounters`: documents decoded, whole-collection
reads, full probe scans, SQLite VM steps), which the tests use to check that the cost per row
stays flat as a collection grows.
"""

from knm.store.embedded_engine.engine import KnmSQLiteEngine
from knm.store.embedded_engine.patches import install_module_patches
from knm.store.embedded_engine.pins import MONGOECO_VERSION, PATCHED_SOURCES, patched_source_hashes
from knm.store.embedded_engine.support import EngineCounters, pinned_ids

__all__ = [
    "MONGOECO_VERSION",
    "PATCHED_SOURCES",
    "EngineCounters",
    "KnmSQLiteEngine",
    "install_module_patches",
    "patched_source_hashes",
    "pinned_ids",
]

install_module_patches()
