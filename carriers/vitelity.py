"""Placeholder: knm_vitelity (to be written)."""

from __future__ import annotations

from typing import ClassVar

from carriers.integration import Integration


class VitelityCarrier(Integration):
    name: ClassVar[str] = "knm_vitelity"
    config_key: ClassVar[str] = "vitelity"
