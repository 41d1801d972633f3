"""The embedded broker's transport: kombu's filesystem transport with atomic writes.

kombu creates a message file and then writes it; a worker polling the folder can take the file
in between and read it empty (a JSON decode error that stops the worker). Here a message is
written under a name the reader ignores and renamed into place, so a reader sees whole files only.
"""

from __future__ import annotations

import os
import uuid
from time import monotonic
from typing import Any

from kombu.exceptions import ChannelError
from kombu.transport import TRANSPORT_ALIASES, filesystem
from kombu.utils.encoding import str_to_bytes
from kombu.utils.json import dumps

ALIAS = "knmfs"


class Channel(filesystem.Channel):
    """Writes each message to a temporary name, then renames it into the queue folder."""

    def _put(self, queue: str, message: Any, **kwargs: Any) -> None:  # type: ignore[override]
        name = f"{round(monotonic() * 1000)}_{uuid.uuid4()}.{queue}.msg"
        final = os.path.join(self.data_folder_out, name)
        partial = os.path.join(self.data_folder_out, f".{name}.partial")
        try:
            with open(partial, "wb") as f:
                f.write(str_to_bytes(dumps(message)))
            os.replace(partial, final)
        except OSError as exc:
            raise ChannelError(f"Cannot add file {final!r} to directory") from exc


class Transport(filesystem.Transport):
    Channel = Channel

    @property
    def default_connection_params(self) -> dict[str, Any]:
        """No host: the folders are the broker (kombu warned "No hostname was supplied" and
        made one up for every connection a worker opened)."""
        return {"port": self.default_port}


def register() -> None:
    """Make ``knmfs://`` name this transport (idempotent)."""
    TRANSPORT_ALIASES.setdefault(ALIAS, f"{__name__}:Transport")
