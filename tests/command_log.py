"""A pymongo command listener for tests that count or list the commands an operation sends."""

from __future__ import annotations

from pymongo import monitoring


class CommandLog(monitoring.CommandListener):
    """(command, collection) of every command sent, in order (``getMore`` included)."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self.seen]

    def clear(self) -> None:
        self.seen.clear()

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        target = event.command.get(event.command_name)
        self.seen.append((event.command_name, target if isinstance(target, str) else ""))

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass
