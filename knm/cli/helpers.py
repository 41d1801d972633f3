"""What every ``knm`` command group shares: exit codes, one-line errors, the store and the broker.

Every command reports a failure as one line on stderr and an exit code, never a traceback:
``die`` for a failure of its own, ``usage_error`` for a usage error (the group prints it), the
``guard`` and ``broker_guard`` contexts for the expected failures of the store and the broker.
``open_knm`` opens the facade on the configured store (the embedded one without
``KNM_MONGODB_URL``). Celery is imported lazily: most commands never need it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Annotated, Any, NoReturn
from urllib.parse import urlsplit, urlunsplit

import typer
from pydantic import ValidationError
from pymongo.errors import ConfigurationError, ConnectionFailure, PyMongoError
from rich.console import Console
from typer._click.exceptions import UsageError
from typer._click.globals import get_current_context

from config.settings import Settings, get_settings, reset_settings
from knm.cli import render
from knm.domain.accounts import bad_account_id, is_account_id
from knm.services.facade import InputError, Knm
from knm.services.numbers_requests import InvalidRequestError
from knm.store import embedded

if TYPE_CHECKING:
    from celery import Celery

OK = 0
FAILED = 1
USAGE = 2

#: ``--timeout`` of ``--via-broker`` (workers.producer.DEFAULT_TIMEOUT_S; celery is imported
#: lazily).
DEFAULT_TIMEOUT_S = 60.0

JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
ViaBroker = Annotated[
    bool,
    typer.Option(
        "--via-broker",
        help="Publish a task and print the result a worker returns (start one: 'knm worker').",
    ),
]
Timeout = Annotated[
    float,
    typer.Option(
        "--timeout",
        metavar="SECONDS",
        min=0.1,
        help="With --via-broker: how long to wait for a worker's result.",
    ),
]


# ================================================================================ errors
def one_line(text: str) -> str:
    return " ".join(str(text).split())


def die(message: str, code: int) -> NoReturn:
    """Print one line on stderr and exit with ``code``."""
    typer.echo(f"knm: error: {one_line(message)}", err=True)
    raise typer.Exit(code)


def usage_error(message: str) -> NoReturn:
    """A usage error of the current command (exit 2)."""
    raise UsageError(message, ctx=get_current_context(silent=True))


def validation_message(exc: ValidationError) -> str:
    problems = []
    for err in exc.errors():
        where = ".".join(str(part) for part in err.get("loc", ()))
        problems.append(f"{where}: {err['msg']}" if where else str(err["msg"]))
    return f"invalid {exc.title}: " + "; ".join(problems)


# ================================================================================ the store
def current_settings() -> Settings:
    """Settings read from the environment now (a test or a wrapper may have changed it)."""
    reset_settings()
    return get_settings()


def redact(url: str) -> str:
    """``url`` without its password."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        userinfo, _, host = parts.netloc.rpartition("@")
        user = userinfo.partition(":")[0]
        return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))
    except ValueError:
        return url


def store_url(settings: Settings | None) -> str:
    """Where the store is, for a message: its URL (password redacted) or the embedded server."""
    if settings is None:
        return "(unknown)"
    if settings.mongodb_url:
        return redact(settings.mongodb_url)
    state = embedded.read_state(settings.data_dir.expanduser().resolve())
    if state is not None:
        return state.url
    return f"the embedded server in {settings.data_dir}"


def mongo_message(exc: PyMongoError) -> str:
    """pymongo's message without the (long) topology description."""
    text = str(exc).split(", Topology Description:")[0]
    return one_line(text)


@contextlib.contextmanager
def guard(settings: Callable[[], Settings | None]) -> Iterator[None]:
    """Turn the expected failures into one line on stderr and an exit code."""
    try:
        yield
    except InputError as exc:
        die(str(exc), USAGE)
    except ValidationError as exc:
        die(validation_message(exc), USAGE)
    except ConfigurationError as exc:
        die(f"cannot reach MongoDB at {store_url(settings())}: {mongo_message(exc)}", USAGE)
    except ConnectionFailure as exc:
        die(f"cannot reach MongoDB at {store_url(settings())}: {mongo_message(exc)}", FAILED)
    except PyMongoError as exc:
        die(f"MongoDB error at {store_url(settings())}: {mongo_message(exc)}", FAILED)


@contextlib.contextmanager
def open_knm() -> Iterator[Knm]:
    """The facade on the configured store, closed afterwards; failures become one line."""
    current: list[Settings] = []
    with guard(lambda: current[0] if current else None):
        settings = current_settings()
        current.append(settings)
        try:
            knm = Knm.open(settings)
        except (RuntimeError, OSError) as exc:  # TimeoutError is an OSError
            if settings.mongodb_url:
                raise
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            die(f"cannot start the embedded MongoDB server in {settings.data_dir}: {first}", FAILED)
        try:
            yield knm
        finally:
            knm.close()


# ================================================================================ the broker
def producer_app(settings: Settings) -> Celery:
    from workers import producer

    return producer.create_app(settings)


@contextlib.contextmanager
def broker_guard(settings: Settings) -> Iterator[None]:
    """Failures of a request sent through the broker as one line and an exit code."""
    from kombu.exceptions import KombuError
    from redis.exceptions import RedisError

    from workers.producer import ProducerError, TaskFailedError

    try:
        yield
    except InvalidRequestError as exc:
        die(str(exc), USAGE)
    except TaskFailedError as exc:
        die(str(exc), USAGE if exc.invalid else FAILED)
    except ProducerError as exc:
        die(str(exc), FAILED)
    except (OSError, RedisError, KombuError) as exc:
        die(f"broker error at {broker_url(settings)}: {one_line(str(exc))}", FAILED)


def broker_url(settings: Settings) -> str:
    if settings.broker_url:
        return redact(settings.broker_url)
    return f"the embedded broker in {settings.data_dir}"


def broker_lines(app: Celery, settings: Settings) -> list[str]:
    """Which broker and result backend ``app`` uses, passwords redacted."""
    from workers.celery_config import embedded_paths, is_embedded

    broker = redact(str(app.conf.broker_url))
    backend = redact(str(app.conf.result_backend))
    if is_embedded(settings):
        where = embedded_paths(settings)["queue"].parent
        kind = f"the embedded broker: no KNM_BROKER_URL, files under {where}"
    else:
        kind = "KNM_BROKER_URL"
    return [f"broker: {broker} ({kind})", f"results: {backend}"]


# ================================================================================ output
def print_json(value: Any) -> None:
    typer.echo(render.dumps(value))


def console() -> Console:
    return render.console()


#: ``--force`` of the commands that name an account to create numbers for.
Force = Annotated[
    bool,
    typer.Option("--force", help="Accept an --account / ACCOUNT that does not exist (yet)."),
]


def require_account(account: str, force: bool, option: str = "--account") -> None:
    """Refuse an account that does not exist, naming it, unless ``force``: numbers created for a
    mistyped id would belong to nobody anyone can see."""
    if not is_account_id(account):
        usage_error(bad_account_id(account))
    if force:
        return
    with open_knm() as knm:
        if knm.get_account(account) is not None:
            return
    usage_error(
        f"{option} {account}: no such account (create it with 'knm accounts create {account} "
        "--name NAME', or pass --force to use it anyway)"
    )
