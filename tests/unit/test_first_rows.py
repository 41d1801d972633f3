"""Duplicate detection for streaming CSV jobs answers the first row and holds no per-row memory."""

from __future__ import annotations

import tracemalloc

from knm.services.first_rows import FirstRows


def test_a_number_seen_again_answers_the_row_it_first_appeared_on() -> None:
    with FirstRows() as seen:
        assert seen.first("+14155550100", 1) == 1
        assert seen.first("+14155550101", 2) == 2
        assert seen.first("+14155550100", 3) == 1
        assert seen.first("+14155550100", 4) == 1
        assert seen.first("+14155550101", 5) == 2


def test_twenty_thousand_numbers_cost_the_python_heap_next_to_nothing() -> None:
    """A dict of 20,000 numbers would hold ~3 MB; the index lives in SQLite's bounded cache."""
    with FirstRows() as seen:
        tracemalloc.start()
        try:
            for row in range(1, 20_001):
                assert seen.first(f"+1415{row:07d}", row) == row
            _current, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert peak < 512 * 1024
        assert seen.first("+14150000007", 20_001) == 7
