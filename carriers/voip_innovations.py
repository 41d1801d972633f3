"""Placeholder: knm_voip_innovations (to be written)."""

from __future__ import annotations

from typing import ClassVar

from carriers.integration import Integration


class VoipInnovationsCarrier(Integration):
    name: ClassVar[str] = "knm_voip_innovations"
    config_key: ClassVar[str] = "voip_innovations"
