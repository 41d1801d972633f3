"""Placeholder: knm_bandwidth2 (to be written)."""

from __future__ import annotations

from typing import ClassVar

from carriers.integration import Integration


class Bandwidth2Carrier(Integration):
    name: ClassVar[str] = "knm_bandwidth2"
    config_key: ClassVar[str] = "bandwidth2"
