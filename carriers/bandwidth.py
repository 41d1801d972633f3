"""Placeholder: knm_bandwidth (to be written)."""

from __future__ import annotations

from typing import ClassVar

from carriers.integration import Integration


class BandwidthCarrier(Integration):
    name: ClassVar[str] = "knm_bandwidth"
    config_key: ClassVar[str] = "bandwidth"
