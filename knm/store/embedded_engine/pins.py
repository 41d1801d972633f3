"""The mongoeco release the adaptation is written against, and the sources it relies on."""

from __future__ import annotations

import hashlib
import inspect
from typing import Any, Final

from mongoeco.api._async import _database_admin_write_commands as write_commands
from mongoeco.engines.sqlite import SQLiteEngine

from knm.store.embedded_engine.patches import _ORIGINALS

MONGOECO_VERSION: Final[str] = "4.11.0"

#: SHA-256 (first 16 hex digits) of the source of each mongoeco function the adaptation
#: overrides or relies on. A mismatch means mongoeco changed underneath: re-read it.
PATCHED_SOURCES: Final[dict[str, str]] = {
    "SQLiteEngine._validate_document_against_unique_indexes": "f50e60835a1d8144",
    "SQLiteEngine._compile_read_execution_plan": "555a669a1859d7f6",
    "SQLiteEngine._select_first_document_for_plan": "cf2d409d2f48e1c3",
    "SQLiteEngine._invalidate_collection_features_cache": "e1bdccc952ff5ab3",
    "SQLiteEngine._create_sqlite_connection": "cb4ac5d67e23de0a",
    "SQLiteEngine._connect_sync": "2bd887c02adb69e7",
    "SQLiteEngine._translate_query_plan_with_multikey": "703ebc7ee809fce9",
    "SQLiteEngine._deserialize_document": "e9c343ca810172f8",
    "SQLiteEngine._load_documents": "4c98f932625a98ad",
    "SQLiteEngine._storage_key": "3af61312918fe8a4",
    "SQLiteEngine._field_contains_tagged_value_type_in_collection": "daf633059f94499c",
    "SQLiteEngine._field_is_top_level_array_in_collection": "fb4a72a41afc93b6",
    "SQLiteEngine._field_traverses_array_in_collection": "0e56ab940673053b",
    "SQLiteEngine._field_traverses_dbref_in_collection": "9125df16865d7105",
    "SQLiteEngine._field_contains_real_numeric_in_collection": "eaac905438c14330",
    "SQLiteEngine._field_contains_non_ascii_text_in_collection": "98902e810b79ecba",
    "SQLiteEngine._field_has_comparison_type_mismatch_in_collection": "cc65f94c10553565",
    "SQLiteEngine._field_has_scalar_or_array_element_type_mismatch_in_collection": (
        "3c71a6d5728f7c0a"
    ),
    "SQLiteEngine._field_has_uniform_scalar_sort_type_in_collection": "b4ad649774909a6a",
    "_sqlite_read_fast_path_runtime.select_first_document_for_plan": "411edc485dbcc859",
    "_database_admin_write_commands.DatabaseAdminWriteCommandService.command_insert": (
        "0cf8f18e356f6ec8"
    ),
    "_sqlite_outbox.append_change": "c9fac60ab9dcd162",
    "SQLiteEngine.dispatch_committed_changes": "d132d0fa4ef6990b",
    # 7. batched writes: the command, the engine's write path it stands in for, what it uses
    "_database_admin_write_commands.DatabaseAdminWriteCommandService.command_update": (
        "e9d6c61df4ce0fc6"
    ),
    "_database_admin_write_commands._validate_update_command_shapes": "ec82c0c8488f05fc",
    "_database_admin_write_commands._write_command_result": "18fdf0169c520f74",
    "SQLiteEngine._run_blocking": "4c5cf4df8e657add",
    "SQLiteEngine._update_with_operation_sync": "8e7bf46c79a15369",
    "SQLiteEngine._serialize_document": "0c5d4cadd21e4aeb",
    "SQLiteEngine._load_indexes": "ca23e8cc8f741c14",
    "SQLiteEngine._load_search_index_rows": "38a1f8df9157a3a9",
    "SQLiteEngine._collection_options_or_empty_sync": "099dd350f56af175",
    "_sqlite_modify_ops.update_with_operation": "24d7c163f39d6669",
    "_sqlite_session_runtime.SQLiteSessionRuntime.begin_write": "f8a2b892622fffd0",
    "_sqlite_session_runtime.SQLiteSessionRuntime.commit_write": "1af79b01710bdbf6",
    "paths.set_document_value": "bbb8cae0b73387a7",
    "query_plan.compile_filter": "0ef8c1dc4d142b0f",
    # 9. scoped indexes: the physical names and the statement that creates them
    "SQLiteEngine._physical_index_name": "bba565fe2e9cb341",
    "_sqlite_index_admin.create_index": "ab9cdd5a6338fca3",
    # 10. index ranges: the sort check they answer (the read plan is pinned above)
    "SQLiteEngine._sort_requires_python": "40df45295b763ee5",
    "_sqlite_plan_heuristics.sort_requires_python": "43dde6499e2b40fa",
    # 8. the encoder
    "DocumentCodec.encode": "a89dded8864e7fbe",
    "DocumentCodec.to_internal": "b1eff2fdd2ea8261",
    "DocumentCodec._is_tagged_value": "334b049af3f1886f",
    "bson_scalars.validate_bson_value": "e3a0a558125ce40c",
    "bson_scalars.wrap_bson_numeric": "1a8174860f1ee84c",
    # 12. joins by _id: the resources' loading and lookup, and the stages that ask for them
    # (the whole-collection read and the storage key the engine's reads mirror are pinned above)
    "AsyncAggregationCursor._load_pipeline_resources": "823ff9134cb0b993",
    "AsyncAggregationCursor._load_collection_documents": "638895de15cb4e2f",
    "AggregationResources.__call__": "50357832eef6ea06",
    "join_stages._apply_lookup": "8441e5b6a705aebb",
    "join_stages._apply_union_with": "134ceff983b0e040",
    "runtime_state._apply_lookup_states": "cb947b3f5081a85b",
    "runtime_state._apply_union_states": "3a3e4dcd41115d91",
    "stages._stage_lookup": "7c9c45b1094efe64",
    "stages._stage_union_with": "b988af2fe4f924ed",
    # 13. pooled readers: what a connection forgets on close, who opens and closes readers
    "SQLiteConnection.close": "0d990c2c4af1c084",
    "SQLiteConnection.__init__": "51278bc7a8560f51",
    "SQLiteScanReader._open": "e5d52f4d029c2e80",
    "SQLiteScanReader._close_locked": "608feeea1f72d796",
    "SQLiteEngine._disconnect_sync": "7ae47879d283e1b2",
    "SQLiteEngine._can_use_dedicated_reader": "5231bc65482b5e6e",
}


def patched_source_hashes() -> dict[str, str]:
    """The current hashes of :data:`PATCHED_SOURCES`' functions in the installed mongoeco."""
    from mongoeco.api._async.aggregation_cursor import AsyncAggregationCursor
    from mongoeco.core import bson_scalars, paths, query_plan
    from mongoeco.core.aggregation import join_stages, runtime_state, stages
    from mongoeco.core.aggregation.resources import AggregationResources
    from mongoeco.core.codec import DocumentCodec
    from mongoeco.engines import (
        _sqlite_index_admin,
        _sqlite_modify_ops,
        _sqlite_outbox,
        _sqlite_plan_heuristics,
        _sqlite_read_fast_path_runtime,
        _sqlite_session_runtime,
    )
    from mongoeco.engines._sqlite_connection import SQLiteConnection
    from mongoeco.engines._sqlite_reader import SQLiteScanReader

    roots: dict[str, Any] = {
        "SQLiteConnection": SQLiteConnection,
        "SQLiteScanReader": SQLiteScanReader,
        "AsyncAggregationCursor": AsyncAggregationCursor,
        "AggregationResources": AggregationResources,
        "join_stages": join_stages,
        "runtime_state": runtime_state,
        "stages": stages,
        "SQLiteEngine": SQLiteEngine,
        "_sqlite_read_fast_path_runtime": _sqlite_read_fast_path_runtime,
        "_sqlite_outbox": _sqlite_outbox,
        "_database_admin_write_commands": write_commands,
        "_sqlite_modify_ops": _sqlite_modify_ops,
        "_sqlite_index_admin": _sqlite_index_admin,
        "_sqlite_plan_heuristics": _sqlite_plan_heuristics,
        "_sqlite_session_runtime": _sqlite_session_runtime,
        "paths": paths,
        "query_plan": query_plan,
        "DocumentCodec": DocumentCodec,
        "bson_scalars": bson_scalars,
    }
    hashes: dict[str, str] = {}
    for name in PATCHED_SOURCES:
        root, *path = name.split(".")
        target = roots[root]
        for attr in path:
            target = getattr(target, attr)
        target = _ORIGINALS.get(name, target)
        source = inspect.getsource(target)
        hashes[name] = hashlib.sha256(source.encode()).hexdigest()[:16]
    return hashes
