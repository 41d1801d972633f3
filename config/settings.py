"""knm configuration: every knob comes from the environment (prefix ``KNM_``, nested ``__``).

Names and defaults follow KAZOO's ``number_manager`` and ``tasks`` categories so an
operator who knows KAZOO finds the same switches.
"""

from __future__ import annotations

from datetime import timedelta
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from config import defaults
from config.carrier_settings import CarrierHttpSettings, CarriersSettings, StrList

ReleasedState = Literal["available", "released"]

ENV_PREFIX = "KNM_"
ENV_NESTED_DELIMITER = "__"
#: The soft time limit's default margin below the hard one (at most this, at least 1 s).
SOFT_LIMIT_MARGIN_S = 60


class SettingsError(ValueError):
    """The environment's settings are invalid; the message is one line naming the variables."""


def env_name(*path: str | int) -> str:
    """The environment variable of a setting: ``("carrier_http", "timeout_s")`` is
    ``KNM_CARRIER_HTTP__TIMEOUT_S``."""
    return ENV_PREFIX + ENV_NESTED_DELIMITER.join(str(part).upper() for part in path)


def _default_classifiers() -> dict[str, dict[str, object] | str]:
    return {name: dict(spec) for name, spec in defaults.CLASSIFIERS.items()}


class Settings(BaseSettings):
    """All of knm's settings; ``get_settings()`` returns the process-wide instance."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter=ENV_NESTED_DELIMITER,
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

    # --- number_manager -------------------------------------------------------------
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
    carrier_plugins: StrList = Field(
        default_factory=list,
        description="Modules whose CARRIERS are registered after the built-in carriers "
        "(comma-separated or JSON list): a carrier shipped outside knm.",
    )
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
    task_time_limit_s: int = Field(default=3600, ge=2, description="Hard limit of one task.")
    task_soft_time_limit_s: int | None = Field(
        default=None,
        ge=1,
        description="Soft limit of one task (below the hard one); unset: the hard limit less "
        "a tenth of it, at most 60 s.",
    )
    broker_visibility_timeout_s: int = Field(
        default=7200,
        ge=1,
        description="Redis: an unacknowledged task is redelivered after this (> the time limit).",
    )
    result_expires_s: int = Field(default=86_400, ge=1)
    worker_concurrency: int = Field(default=2, ge=1)
    task_events: bool = Field(
        default=False,
        description="Workers send Celery task events (what Flower shows); off by default, "
        "as in Celery: they cost each task a few broker writes.",
    )
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
    message_max_bytes: int = Field(
        default=16 * 1024 * 1024,
        ge=1024,
        description="A compressed task message whose body inflates past this is refused "
        "without decompressing it.",
    )

    # --- the HTTP API (knm api serve) -------------------------------------------------------------
    api_wait_s: float = Field(
        default=10.0,
        gt=0,
        description="How long a write through the API waits for the worker's result before "
        "answering 202 with its request id (the request goes on).",
    )
    api_async_expiry_s: int = Field(
        default=3600,
        ge=1,
        description="A write sent with ?async=true is dropped if no worker starts it in time.",
    )
    api_max_body_bytes: int = Field(
        default=1024 * 1024, ge=1024, description="The largest JSON request body (else 413)."
    )
    api_max_csv_bytes: int = Field(
        default=512 * 1024 * 1024,
        ge=1024,
        description="The largest CSV body of PUT .../tasks (else 413); it is streamed, never "
        "held whole.",
    )
    api_body_timeout_s: float = Field(
        default=30.0,
        gt=0,
        description="A client that sends no byte of its body for this long gets 408.",
    )
    api_threads: int = Field(
        default=100,
        ge=1,
        description="Requests the API runs at once (a write holds one while it waits).",
    )
    api_page_size: int = Field(
        default=1000, ge=1, description="Numbers per page of GET .../phone_numbers (at most)."
    )

    # --- tasks ----------------------------------------------------------------------
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

    @property
    def soft_time_limit_s(self) -> int:
        """The soft time limit a task gets (the explicit one, else derived from the hard)."""
        if self.task_soft_time_limit_s is not None:
            return self.task_soft_time_limit_s
        margin = max(1, min(SOFT_LIMIT_MARGIN_S, self.task_time_limit_s // 10))
        return self.task_time_limit_s - margin

    @model_validator(mode="after")
    def _coherent(self) -> Settings:
        """Settings that are each valid but wrong together (checked at start-up)."""
        hard = self.task_time_limit_s
        soft = self.task_soft_time_limit_s
        if soft is not None and soft >= hard:
            raise ValueError(
                f"{env_name('task_soft_time_limit_s')}={soft} must be below "
                f"{env_name('task_time_limit_s')}={hard} (the soft limit warns a task before "
                "the hard one kills it)"
            )
        if self.broker_visibility_timeout_s <= hard:
            raise ValueError(
                f"{env_name('broker_visibility_timeout_s')}={self.broker_visibility_timeout_s} "
                f"must be above {env_name('task_time_limit_s')}={hard} (else a task still "
                "running is handed to another worker)"
            )
        if self.carrier_retry_base_s > self.carrier_retry_max_s:
            raise ValueError(
                f"{env_name('carrier_retry_base_s')}={self.carrier_retry_base_s:g} must not be "
                f"above {env_name('carrier_retry_max_s')}={self.carrier_retry_max_s:g}"
            )
        return self


def settings_error(exc: ValidationError) -> SettingsError:
    """One line naming each invalid variable and its rule (never its value: it may be secret)."""
    problems = []
    for err in exc.errors():
        message = str(err["msg"]).removeprefix("Value error, ")
        path = _setting_path(err.get("loc", ()))
        problems.append(f"{env_name(*path)}: {message}" if path else message)
    return SettingsError("invalid settings: " + "; ".join(problems))


def _setting_path(loc: tuple[str | int, ...]) -> list[str]:
    """The fields of ``loc`` down to the one an environment variable sets (a JSON-valued
    setting's own keys, say a classifier's, are part of its value, not of its name)."""
    path: list[str] = []
    model: object = Settings
    for part in loc:
        fields = (
            model.model_fields if isinstance(model, type) and issubclass(model, BaseModel) else {}
        )
        if not isinstance(part, str) or part not in fields:
            break
        path.append(part)
        model = fields[part].annotation
    return path


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The settings of this process, read once from the environment.

    Raises ``SettingsError`` (one line naming the variables) when they are invalid.
    """
    try:
        return Settings()
    except ValidationError as exc:
        raise settings_error(exc) from None


def reset_settings() -> None:
    """Forget the cached settings (tests and the CLI change the environment)."""
    get_settings.cache_clear()
