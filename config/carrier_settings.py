"""Settings of the carrier integrations (``KNM_CARRIERS__<NAME>__<KEY>``) and of their HTTP
client (``KNM_CARRIER_HTTP__<KEY>``).

Each integration keeps the keys and defaults of KAZOO's ``number_manager.<carrier>`` config plus
``base_url``, so an operator can point it at a provider's sandbox (or at ``knm sandbox serve``).
Credentials are ``SecretStr``: they print as ``**********`` and reach the wire only as the
provider's auth header or parameter.
"""

from __future__ import annotations

import json
from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, SecretStr
from pydantic_settings import NoDecode


def _as_list(value: object) -> object:
    """A string or a list, as KAZOO accepts: ``a,b``, ``["a", "b"]`` or a single ``a``."""
    if value is None or value == "":
        return []
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            return json.loads(text)
        return [part.strip() for part in text.split(",") if part.strip()]
    return value


#: A list of strings settable from one environment variable (comma-separated or JSON).
StrList = Annotated[list[str], NoDecode, BeforeValidator(_as_list)]


class _CarrierSettings(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    enable_provisioning: bool = True
    sandbox_provisioning: bool = False
    rate_limit_per_s: float = Field(
        default=0.0,
        ge=0,
        description="Requests per second to this provider across every worker (0: no limit).",
    )


class TelnyxSettings(_CarrierSettings):
    """``number_manager.telnyx``."""

    base_url: str = "https://api.telnyx.com/origination/"
    user: SecretStr = SecretStr("")
    token: SecretStr = SecretStr("")
    should_keep_best_effort: bool = False
    should_filter_rates: bool = False
    upfront_cost: float = 1.0
    monthly_recurring_cost: float = 1.0


class VitelitySettings(_CarrierSettings):
    """``number_manager.vitelity``; ``base_url`` is KAZOO's ``api_uri`` (https)."""

    base_url: str = "https://api.vitelity.net/api.php"
    login: SecretStr = SecretStr("")
    password: SecretStr = Field(default=SecretStr(""), description="KAZOO's `pass`.")
    routesip: StrList = Field(default_factory=list)
    use_stepswitch_cnam: bool = False
    withrates: str | None = None
    type: str | None = None
    provider: str | None = None
    cnam: str | None = None


class VoipInnovationsSettings(_CarrierSettings):
    """``number_manager.voip_innovations``; sandbox mode calls ``sandbox_url``."""

    base_url: str = "https://backoffice.voipinnovations.com/Services/APIService.asmx"
    sandbox_url: str = "http://dev.voipinnovations.com/VOIP/Services/APIService.asmx"
    login: SecretStr = SecretStr("")
    password: SecretStr = SecretStr("")
    endpoint_group: str = ""


class BandwidthSettings(_CarrierSettings):
    """``number_manager.bandwidth``, deprecated: use knm_bandwidth2."""

    base_url: str = Field(
        default="https://api.bandwidth.com/public/v2/numbers.api",
        description="KAZOO's `numbers_api_url`.",
    )
    developer_key: SecretStr = SecretStr("")
    sandbox_provisioning: bool = True
    order_name_prefix: str = "Kazoo"
    endpoints: StrList = Field(default_factory=list)


class Bandwidth2Settings(_CarrierSettings):
    """``number_manager.bandwidth2``."""

    base_url: str = "https://api.inetwork.com/v1.0"
    account_id: str = ""
    api_username: SecretStr = SecretStr("")
    api_password: SecretStr = SecretStr("")
    site_id: str = ""
    sip_peer: str = ""
    sandbox_provisioning: bool = True
    order_name_prefix: str = "Kazoo"
    max_search_quantity: int = Field(default=500, ge=1)
    order_poll_interval_s: float = Field(
        default=2.0, ge=0, description="Wait between order-status polls (KAZOO: 2 s)."
    )
    order_poll_max: int = Field(
        default=30, ge=1, description="Polls of a RECEIVED order before giving up (KAZOO: none)."
    )


class OtherSettings(_CarrierSettings):
    """``number_manager.other``: a generic phonebook peer at ``base_url``."""

    base_url: str | None = Field(default=None, description="KAZOO's `phonebook_url`.")
    default_country: str = "US"
    endpoints: StrList = Field(default_factory=list)


class CarriersSettings(BaseModel):
    """One section per integration: ``KNM_CARRIERS__TELNYX__TOKEN=...``.

    A section with no field here (a carrier plugin's) is kept as given; the carrier validates
    it with its own ``config_model``.
    """

    model_config = ConfigDict(extra="allow", frozen=True)

    telnyx: TelnyxSettings = Field(default_factory=TelnyxSettings)
    vitelity: VitelitySettings = Field(default_factory=VitelitySettings)
    voip_innovations: VoipInnovationsSettings = Field(default_factory=VoipInnovationsSettings)
    bandwidth: BandwidthSettings = Field(default_factory=BandwidthSettings)
    bandwidth2: Bandwidth2Settings = Field(default_factory=Bandwidth2Settings)
    other: OtherSettings = Field(default_factory=OtherSettings)


class CarrierHttpSettings(BaseModel):
    """The HTTP client and retry policy shared by every integration."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    connect_timeout_s: float = Field(default=10.0, gt=0)
    timeout_s: float = Field(default=30.0, gt=0, description="Read/write timeout of one call.")
    max_attempts: int = Field(
        default=5, ge=1, description="Attempts of one provider call, the first included."
    )
    backoff_base_s: float = Field(default=0.5, ge=0, description="First retry delay (doubles).")
    backoff_max_s: float = Field(default=30.0, ge=0, description="Cap of one retry delay.")
    retry_after_max_s: float = Field(
        default=60.0, ge=0, description="Longest Retry-After honoured; longer fails the call."
    )
    verify_tls: bool = Field(
        default=True, description="Keep on (KAZOO turned it off for some carriers)."
    )
    breaker_failures: int = Field(
        default=5,
        ge=1,
        description="Failed calls (retries used up) within breaker_window_s that open a "
        "carrier's circuit breaker.",
    )
    breaker_window_s: float = Field(default=60.0, gt=0)
    breaker_open_s: float = Field(
        default=30.0,
        gt=0,
        description="How long an open breaker holds calls back before one probe may go.",
    )
    order_lease_s: float = Field(
        default=300.0,
        gt=0,
        description="How long an order in progress holds its number before another attempt "
        "may reconcile it (a crashed worker's order is reconciled after this).",
    )
