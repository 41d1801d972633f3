"""The names other services publish to: knm's task names and the queue they are sent to.

They are part of the message contract (the JSON Schema index names them), so they live here,
below the workers that register and send the tasks.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:  # only its value is read: the workers' configuration imports this module
    from knm.services.numbers_requests import Operation

#: The queue every task is published to unless it is a carrier's share.
DEFAULT_QUEUE: Final[str] = "knm"
SEARCH_TASK: Final[str] = "knm.search"


def task_name(op: Operation) -> str:
    """The task of an operation: ``knm.numbers.<op>``."""
    return f"knm.numbers.{op.value}"
