"""Operation options (KAZOO's ``knm_options``) as one validated model."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from knm.domain.accounts import SYSTEM
from knm.domain.number import NumberState


class Options(BaseModel):
    """What an operation is asked to do and on whose authority.

    ``auth_by`` defaults to ``system`` as KAZOO's ``default()`` does; ``None`` means "unknown
    requester" and fails every authorization check.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    auth_by: str | None = SYSTEM
    assign_to: str | None = None
    state: NumberState | None = None
    module_name: str | None = None
    ported_in: bool = False
    public_fields: dict[str, Any] | None = None
    dry_run: bool = False
    batch_run: bool = False
    mdn_run: bool = Field(default=False, description="The operation is about MDN numbers.")
    request_id: str | None = Field(
        default=None,
        description="Idempotency key: numbers already written by this request are not redone.",
    )

    def but(self, **changes: Any) -> Options:
        """A validated copy with some options changed; explicitly given options stay given."""
        data = {name: getattr(self, name) for name in self.model_fields_set}
        data.update(changes)
        return type(self).model_validate(data)
