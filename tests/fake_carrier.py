"""A carrier that is not part of knm: ``KNM_CARRIER_PLUGINS=tests.fake_carrier`` registers it.

It is what a carrier shipped outside knm looks like, and the whole of it: one module, no line of
knm edited. Its class says everything knm needs: the module name (``knm_fake``, so its work runs
on ``carrier.knm_fake``), the kind of worker that serves it, its settings
(``KNM_CARRIERS__FAKE__STOCK``, ``KNM_CARRIERS__FAKE__TOKEN``) and the E911 provider it offers.

Its "provider" is a MongoDB collection: every acquire, disconnect and E911 change is recorded in
``fake_carrier_calls`` with the process that made it, so a test sees which worker did the work.
"""

from __future__ import annotations

import os
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from carriers.base import Carrier, CarrierContext, CarrierKind, SearchRequest, SearchResult
from carriers.features import FeatureContext, FeatureProvider
from knm.domain.number import NumberState, PhoneNumber

CALLS = "fake_carrier_calls"
E164_LENGTH = 12  # +1 and ten digits


class FakeSettings(BaseModel):
    """``KNM_CARRIERS__FAKE__<KEY>``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    stock: int = Field(default=3, ge=1, description="How many numbers a search offers.")
    token: SecretStr = SecretStr("")


def record(ctx: CarrierContext, action: str, pn: PhoneNumber, **extra: Any) -> None:
    ctx.db[CALLS].insert_one({"action": action, "number": pn.number, "pid": os.getpid(), **extra})


class FakeE911Provider(FeatureProvider):
    """E911 "at the provider": the address is recorded, then kept in ``pvt_features``."""

    name: ClassVar[str] = "knm_fake_e911"
    features: ClassVar[tuple[str, ...]] = ("e911",)

    def save(self, pn: PhoneNumber, fctx: FeatureContext) -> None:
        wanted = pn.public.get("e911")
        if pn.state != NumberState.IN_SERVICE or not wanted:
            self.delete(pn, fctx)
        elif pn.features.get("e911") != wanted:
            record(self.ctx, "e911_save", pn)
            pn.set_feature("e911", wanted)

    def delete(self, pn: PhoneNumber, fctx: FeatureContext) -> None:
        if "e911" in pn.features:
            record(self.ctx, "e911_delete", pn)
            pn.remove_feature("e911")


class FakeCarrier(Carrier):
    """Offers ``stock`` numbers under any prefix; buys and releases by recording the call."""

    name: ClassVar[str] = "knm_fake"
    kind: ClassVar[CarrierKind] = CarrierKind.PROVIDER
    config_key: ClassVar[str] = "fake"
    config_model: ClassVar[type[FakeSettings]] = FakeSettings
    feature_providers: ClassVar[tuple[type[FeatureProvider], ...]] = (FakeE911Provider,)

    def __init__(self, ctx: CarrierContext) -> None:
        super().__init__(ctx)
        self.config: FakeSettings = self.read_config(ctx.settings)

    def find_numbers(self, request: SearchRequest) -> list[SearchResult]:
        width = E164_LENGTH - len(request.prefix)
        if width < 1:
            return []
        count = min(self.config.stock, request.quantity, 10**width - 1)
        return [
            SearchResult(f"{request.prefix}{i:0{width}d}", self.name, NumberState.DISCOVERY)
            for i in range(1, count + 1)
        ]

    def acquire_number(self, pn: PhoneNumber) -> None:
        token_set = bool(self.config.token.get_secret_value())
        record(self.ctx, "acquire", pn, token_set=token_set)
        pn.set_carrier_data({**pn.carrier_data, "order": f"fake-{pn.number}"})

    def disconnect_number(self, pn: PhoneNumber) -> None:
        record(self.ctx, "disconnect", pn)


CARRIERS = (FakeCarrier,)
