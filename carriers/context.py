"""What a carrier module or a feature provider may use: the database and the settings."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pymongo.database import Database

from config.settings import Settings


@dataclass(frozen=True)
class CarrierContext:
    """What a carrier module may use: the database and the settings of this process."""

    db: Database[dict[str, Any]]
    settings: Settings
