"""Planner probes re-checked on new rows only (3): the engine's probe cache, kept current."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from mongoeco.engines.sqlite import SQLiteEngine

from knm.store.embedded_engine.support import (
    _CHANGE_LOG_LIMIT,
    _UNIVERSAL_PROBE_PREFIX,
    EngineCounters,
    _ChangeLog,
)


class ProbeCaching(SQLiteEngine):
    """mongoeco's collection probes ("does any document hold an array / a decimal / ... at this
    field?") are full scans whose cached answers every write throws away. Here writes are logged
    (a trigger calls :meth:`_knm_written`) and a cached answer is re-checked against only the
    rows written since: a probe asks whether *some* document has a property, so a ``True``
    stays ``True`` and a ``False`` needs only the new rows checked."""

    counters: EngineCounters
    _knm_changes: dict[tuple[str, str], _ChangeLog]
    _knm_checked: dict[tuple[str, str, str], int]
    _knm_changes_lock: threading.Lock
    _knm_local: threading.local

    def _knm_written(self, db_name: str, coll_name: str, storage_key: str) -> None:
        with self._knm_changes_lock:
            log = self._knm_changes.setdefault((db_name, coll_name), _ChangeLog())
            log.keys.append(storage_key)

    def _invalidate_collection_features_cache(
        self, db_name: str | None = None, coll_name: str | None = None
    ) -> None:
        if db_name is None or coll_name is None:
            with self._knm_changes_lock:
                self._knm_changes.clear()
                self._knm_checked.clear()
            super()._invalidate_collection_features_cache()
            return
        # Writes are in the change log; only the universal probe's answer is dropped here.
        cache = self._collection_features_cache
        for key in [k for k in cache if k[:2] == (db_name, coll_name)]:
            if key[2].startswith(_UNIVERSAL_PROBE_PREFIX):
                cache.pop(key, None)
        self._trim_changes(db_name, coll_name)

    def _trim_changes(self, db_name: str, coll_name: str) -> None:
        """Forget logged writes every cached answer has seen; drop answers if the log is long."""
        with self._knm_changes_lock:
            log = self._knm_changes.get((db_name, coll_name))
            if log is None:
                return
            checked = [
                pos for key, pos in self._knm_checked.items() if key[:2] == (db_name, coll_name)
            ]
            log.trim(min(checked, default=log.end))
            if len(log.keys) > _CHANGE_LOG_LIMIT:
                for key in [k for k in self._knm_checked if k[:2] == (db_name, coll_name)]:
                    self._knm_checked.pop(key, None)
                    self._collection_features_cache.pop(key, None)
                log.trim(log.end)

    def _probe(self, run: Callable[[], Any], key: tuple[str, str, str]) -> Any:
        """A probe's answer, re-checked against the rows written since it was last known."""
        cache = self._collection_features_cache
        with self._knm_changes_lock:
            log = self._knm_changes.get(key[:2])
            end = log.end if log is not None else 0
            pending = log.since(self._knm_checked.get(key, 0)) if log is not None else []
        if key in cache:
            known = cache[key]
            if known is True or not pending:
                return known
            del cache[key]
            self.counters.add("probe_delta_checks")
            self._knm_local.delta = pending
            try:
                fresh = run()
            finally:
                self._knm_local.delta = None
            answer = bool(known) or bool(fresh)
            cache[key] = answer
        else:
            answer = run()
            if key in cache:
                self.counters.add("probe_full_scans")
        if key in cache:
            with self._knm_changes_lock:
                self._knm_checked[key] = end
        return answer

    def _field_contains_tagged_value_type_in_collection(
        self, db_name: str, coll_name: str, field: str, value_type: str
    ) -> bool:
        return bool(
            self._probe(
                lambda: super(ProbeCaching, self)._field_contains_tagged_value_type_in_collection(
                    db_name, coll_name, field, value_type
                ),
                (db_name, coll_name, f"tagged_type:{field}:{value_type}"),
            )
        )

    def _field_is_top_level_array_in_collection(
        self, db_name: str, coll_name: str, field: str
    ) -> bool:
        return bool(
            self._probe(
                lambda: super(ProbeCaching, self)._field_is_top_level_array_in_collection(
                    db_name, coll_name, field
                ),
                (db_name, coll_name, f"top_level_array:{field}"),
            )
        )

    def _field_traverses_array_in_collection(
        self, db_name: str, coll_name: str, field: str
    ) -> bool:
        return bool(
            self._probe(
                lambda: super(ProbeCaching, self)._field_traverses_array_in_collection(
                    db_name, coll_name, field
                ),
                (db_name, coll_name, f"traverses_array:{field}"),
            )
        )

    def _field_traverses_dbref_in_collection(
        self, db_name: str, coll_name: str, field: str
    ) -> bool:
        return bool(
            self._probe(
                lambda: super(ProbeCaching, self)._field_traverses_dbref_in_collection(
                    db_name, coll_name, field
                ),
                (db_name, coll_name, f"traverses_dbref:{field}"),
            )
        )

    def _field_contains_real_numeric_in_collection(
        self, db_name: str, coll_name: str, field: str
    ) -> bool:
        return bool(
            self._probe(
                lambda: super(ProbeCaching, self)._field_contains_real_numeric_in_collection(
                    db_name, coll_name, field
                ),
                (db_name, coll_name, f"contains_real_numeric:{field}"),
            )
        )

    def _field_contains_non_ascii_text_in_collection(
        self, db_name: str, coll_name: str, field: str
    ) -> bool:
        return bool(
            self._probe(
                lambda: super(ProbeCaching, self)._field_contains_non_ascii_text_in_collection(
                    db_name, coll_name, field
                ),
                (db_name, coll_name, f"contains_non_ascii_text:{field}"),
            )
        )

    def _field_has_comparison_type_mismatch_in_collection(
        self, db_name: str, coll_name: str, field: str, expected_type: str
    ) -> bool:
        return bool(
            self._probe(
                lambda: super(ProbeCaching, self)._field_has_comparison_type_mismatch_in_collection(
                    db_name, coll_name, field, expected_type
                ),
                (db_name, coll_name, f"comparison_mismatch:{field}:{expected_type}"),
            )
        )

    def _field_has_scalar_or_array_element_type_mismatch_in_collection(
        self, db_name: str, coll_name: str, field: str, expected_type: str
    ) -> bool:
        return bool(
            self._probe(
                lambda: super(
                    ProbeCaching, self
                )._field_has_scalar_or_array_element_type_mismatch_in_collection(
                    db_name, coll_name, field, expected_type
                ),
                (
                    db_name,
                    coll_name,
                    f"scalar_or_array_comparison_mismatch:{field}:{expected_type}",
                ),
            )
        )
