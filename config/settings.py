"""knm configuration: every knob comes from the environment (prefix ``KNM_``, nested ``__``).

Names and defaults follow KAZOO's ``number_manager`` and ``tasks`` categories (spec §10) so an
operator who knows KAZOO finds the same switches.
"""

from __future__ import annotations

from datetime import timedelta
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from config import defaults
from config.carrier_settings import CarrierHttpSettings, CarriersSettings, StrList

ReleasedState = Literal["available", "released"]


def _default_classifiers() -> dict[str, dict[str, object] | str]:
    return {name: dict(spec) for name, spec in defaults.CLASSIFIERS.items()}


class Settings(BaseSettings):
    """All of knm's settings; ``get_settings()`` returns the process-wide instance."""

    model_config = SettingsConfigDict(
        env_prefix="KNM_",
        env_nested_delimiter="__",
        extra="ignore",
    )

    # --- storage -------------------------------------------------------------------------------
    mongodb_url: str | None = Field(
        default=None,
        description="MongoDB URL; unset means the embedded server under data_dir.",
    )
    mongodb_db: str = "knm"
    mongodb_max_in: int | None = Field(
        default=None,
        ge=1,
        description="Split $in lookups into chunks of this many values (default: never).",
    )
    mongodb_timeout_ms: int = Field(
        default=10_000, ge=1, description="How long to wait for MongoDB before giving up."
    )
    data_dir: Path = Path("./.knm")

    # --- number_manager (spec §10.1) -------------------------------------------------------------
    available_module_name: str = "knm_local"
    carrier_modules: StrList = Field(
        default_factory=lambda: ["knm_local"],
        description="Modules a search asks (comma-separated or JSON list).",
    )
    port_in_module_name: str = "knm_local"
    released_state: ReleasedState = "available"
    should_permanently_delete: bool = False
    should_age: bool = False
    local_feature_override: bool = False
    features_allow: StrList | None = Field(
        default=None,
        description="System feature whitelist (comma-separated or JSON list); unset: every "
        "feature. The system_config document's features.allow wins over it.",
    )
    features_deny: StrList | None = Field(
        default=None,
        description="System feature blacklist, applied to every number; the system_config "
        "document's features.deny wins over it.",
    )
    cnam_provider: str = Field(
        default="knm_cnam_notifier",
        description="CNAM provider module when the reseller names none.",
    )
    e911_provider: str | None = Field(
        default=None,
        description="E911 provider module when the reseller names none; unset: the number's "
        "carrier's own (knm_telnyx_e911, knm_vitelity_e911) or none.",
    )
    default_force_outbound: bool = False
    force_local_outbound: bool = True
    force_port_in_outbound: bool = True
    force_port_out_outbound: bool = True
    fetch_account_from_ports: bool = True
    maximum_search_quantity: int = Field(default=500, ge=1)
    number_search_timeout_ms: int = Field(default=5000, ge=1)
    search_cache_ttl_s: int = Field(default=900, ge=1, description="Lifetime of a search's cache.")
    e164_converters: dict[str, dict[str, str]] = Field(
        default_factory=lambda: dict(defaults.E164_CONVERTERS)
    )
    reconcile_regex: str = defaults.RECONCILE_REGEX
    classifiers: dict[str, dict[str, object] | str] = Field(default_factory=_default_classifiers)
    default_country: str = "US"

    # --- carrier integrations (KNM_CARRIERS__<NAME>__<KEY>, KNM_CARRIER_HTTP__<KEY>) -----------
    carriers: CarriersSettings = Field(default_factory=CarriersSettings)
    coordination_url: str | None = Field(
        default=None,
        description="Redis shared by every worker for carrier rate limits, circuit breakers and "
        "in-flight counts; unset: the Redis broker, else per process.",
    )
    carrier_http: CarrierHttpSettings = Field(default_factory=CarrierHttpSettings)

    # --- store behaviour -----------------------------------------------------------------------
    job_retention_d: float = Field(
        default=30,
        gt=0,
        description="Days a finished CSV job, its rows and results are kept (then deleted).",
    )
    max_conflict_retries: int = Field(
        default=5, ge=1, description="Re-runs of an operation on numbers whose pvt_rev moved."
    )

    # --- the worker system (Celery) --------------------------------------------------------------
    broker_url: str | None = Field(
        default=None,
        description="Celery broker (redis:// or amqp://); unset: the embedded broker in data_dir.",
    )
    result_backend: str | None = Field(
        default=None,
        description="Celery result backend; unset: the Redis broker itself, rpc:// for AMQP.",
    )
    task_time_limit_s: int = Field(default=3600, ge=1, description="Hard limit of one task.")
    broker_visibility_timeout_s: int = Field(
        default=7200,
        ge=1,
        description="Redis: an unacknowledged task is redelivered after this (> the time limit).",
    )
    result_expires_s: int = Field(default=86_400, ge=1)
    worker_concurrency: int = Field(default=2, ge=1)
    task_max_retries: int = Field(
        default=5, ge=0, description="Retries of a task whose store or broker was unreachable."
    )
    carrier_retry_base_s: float = Field(
        default=10.0,
        ge=0,
        description="A request whose provider failed transiently is re-queued after this "
        "(doubling, capped at carrier_retry_max_s), up to task_max_retries times.",
    )
    carrier_retry_max_s: float = Field(default=600.0, ge=0)
    request_outcome_ttl_s: int = Field(
        default=7 * 86_400, ge=1, description="How long a request's outcome is kept (idempotency)."
    )
    embedded_polling_interval_s: float = Field(default=0.1, gt=0)

    # --- tasks (spec §10.2) ----------------------------------------------------------------------
    crawler_interval: timedelta = Field(
        default=timedelta(days=1),
        description="How often beat runs the sweeps (seconds, or ISO 8601 like P1D).",
    )
    sweep_lock_ttl_s: int = Field(
        default=300, ge=5, description="A sweep's lock expires this long after its last batch."
    )
    sweep_batch_size: int = Field(
        default=1000, ge=1, description="Documents a sweep reads and writes per batch."
    )

    @field_validator("crawler_interval", mode="before")
    @classmethod
    def _seconds(cls, value: object) -> object:
        """``KNM_CRAWLER_INTERVAL=3600`` means seconds, like ``P1D`` means a day."""
        if isinstance(value, str) and value.strip().isdigit():
            return int(value.strip())
        return value

    aging_expiry_d: int = Field(default=90, ge=0)
    discovery_expiry_d: int = Field(default=1, ge=0)
    import_defaults_to_carrier: str = "knm_local"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The settings of this process, read once from the environment."""
    return Settings()


def reset_settings() -> None:
    """Forget the cached settings (tests and the CLI change the environment)."""
    get_settings.cache_clear()
