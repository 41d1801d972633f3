"""Placeholder: knm_other (to be written)."""

from __future__ import annotations

from typing import ClassVar

from carriers.integration import Integration


class OtherCarrier(Integration):
    name: ClassVar[str] = "knm_other"
    config_key: ClassVar[str] = "other"
