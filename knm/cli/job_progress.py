"""Progress bars of ``knm jobs submit --wait`` (on stderr): rows stored, then rows done.

Storing a large file takes a while before any worker starts, so the rows are counted as they
are stored (every insert batch), with their rate; then the job's rows done, with the rate and
the time remaining.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text


class RateColumn(ProgressColumn):
    """Rows per second, once rich has measured a speed."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:,.0f} rows/s" if speed else "", style="progress.data.speed")


@contextmanager
def storing(console: Console) -> Iterator[Callable[[int], None]]:
    """A counter of rows stored so far; yields the callback ``create_job`` calls per batch.

    Shown from the first batch stored: a file refused on its header shows nothing but the error.
    """
    progress = Progress(
        TextColumn("storing rows"),
        TextColumn("{task.completed:,}"),
        RateColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )
    task = progress.add_task("stored", total=None)

    def stored(count: int) -> None:
        if not progress.live.is_started:
            progress.start()
        progress.update(task, completed=count)

    try:
        yield stored
    finally:
        if progress.live.is_started:
            progress.stop()


def running(console: Console) -> Progress:
    """The bar of rows done: count of total, rate, elapsed and remaining time."""
    return Progress(
        TextColumn("job {task.fields[job]} {task.fields[status]}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("rows"),
        RateColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )
