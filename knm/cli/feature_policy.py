"""Feature permissions above the number: ``knm features system ...`` and
``knm features reseller ...`` (the system and the reseller's allow/deny lists, and which
CNAM/E911 provider they use).

- ``knm features system show [--json]``: the effective system lists and providers.
- ``knm features system allow|deny add|remove FEATURE``, ``... allow|deny reset`` (back to the
  environment's or KAZOO's default), ``knm features system provider cnam|e911 MODULE|default``.
- ``knm features reseller show ACCOUNT``, ``knm features reseller allow|deny add|remove ACCOUNT
  FEATURE``, ``... allow|deny reset ACCOUNT``, ``knm features reseller provider ACCOUNT
  cnam|e911 MODULE|default``. A reseller's lists apply to the numbers of its accounts; its deny
  list replaces the local rule.

Changes take effect on the next save of a number (features are applied on save).
"""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Annotated, Any

import typer

from knm.cli.helpers import FAILED, current_settings, die, open_knm, print_json, usage_error
from knm.services import features as catalogue
from knm.store import system_config

system_app = typer.Typer(help="System-wide feature lists and providers.", no_args_is_help=True)
reseller_app = typer.Typer(help="A reseller's feature lists and providers.", no_args_is_help=True)

JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON.")]
Feature = Annotated[str, typer.Argument(metavar="FEATURE", help="A feature (knm features list).")]
AccountArg = Annotated[str, typer.Argument(metavar="ACCOUNT", help="The reseller's account id.")]


class ListName(StrEnum):
    ALLOW = "allow"
    DENY = "deny"


class Kind(StrEnum):
    CNAM = "cnam"
    E911 = "e911"


Verb = Annotated[str, typer.Argument(metavar="add|remove|reset", help="What to do.")]
Module = Annotated[
    str, typer.Argument(metavar="MODULE|default", help="A provider module, or 'default'.")
]


def _feature(name: str | None) -> str:

    if name is None:
        usage_error("FEATURE is required with add|remove")
    canonical = catalogue.canonical_feature(name)
    if canonical not in catalogue.ALL_FEATURES:
        usage_error(f"unknown feature {name!r}: known are {', '.join(catalogue.ALL_FEATURES)}")
    return canonical


def _verb(verb: str) -> str:

    if verb not in ("add", "remove", "reset"):
        usage_error(f"expected add, remove or reset, not {verb!r}")
    return verb


def _provider(module: str) -> str | None:
    from knm.services.feature_providers import default_providers

    if module == "default":
        return None
    if module not in default_providers():
        usage_error(f"unknown provider module {module!r}")
    return module


# ================================================================================ system
@system_app.command("show")
def system_show(as_json: JsonFlag = False) -> None:
    """The effective system feature lists and providers (stored, else environment, else KAZOO)."""

    settings = current_settings()
    with open_knm() as knm:
        config = system_config.load(knm.store.db, settings).to_json()
    _print(config, as_json)


def _system_list(which: ListName) -> Any:
    def command(
        verb: Verb, feature: Annotated[str | None, typer.Argument(metavar="[FEATURE]")] = None
    ) -> None:

        settings = current_settings()
        action = _verb(verb)
        with open_knm() as knm:
            db = knm.store.db
            if action == "reset":
                system_config.set_feature_list(db, which.value, None)
            else:
                system_config.edit_feature_list(
                    db,
                    settings,
                    which.value,
                    _feature(feature),
                    add=action == "add",
                    all_features=catalogue.ALL_FEATURES,
                )
            config = system_config.load(db, settings).to_json()
        _print(config, False)

    command.__name__ = f"system_{which.value}"
    command.__doc__ = f"Edit the system's features.{which.value} list (add|remove FEATURE, reset)."
    return command


@system_app.command("provider")
def system_provider(kind: Kind, module: Module) -> None:
    """Which module provides CNAM or E911 by default ('default': KAZOO's / the carrier's)."""

    settings = current_settings()
    value = _provider(module)
    with open_knm() as knm:
        system_config.set_value(knm.store.db, f"{kind.value}_provider", value)
        config = system_config.load(knm.store.db, settings).to_json()
    _print(config, False)


# ================================================================================ reseller
def _reseller_config(knm: Any, account_id: str) -> dict[str, Any]:

    account = knm.get_account(account_id)
    if account is None:
        die(f"account {account_id} does not exist", FAILED)
    nm = account.number_manager
    return {
        "account_id": account.id,
        "name": account.name,
        "is_reseller": account.is_reseller,
        "features": {"allow": nm.features_allow, "deny": nm.features_deny},
        "cnam_provider": nm.cnam_provider,
        "e911_provider": nm.e911_provider,
    }


@reseller_app.command("show")
def reseller_show(account: AccountArg, as_json: JsonFlag = False) -> None:
    """A reseller's feature lists and providers (unset: the system's)."""

    with open_knm() as knm:
        config = _reseller_config(knm, account)
    _print(config, as_json)


def _reseller_list(which: ListName) -> Any:
    def command(
        verb: Verb,
        account: AccountArg,
        feature: Annotated[str | None, typer.Argument(metavar="[FEATURE]")] = None,
    ) -> None:

        action = _verb(verb)
        key = f"number_manager.features.{which.value}"
        with open_knm() as knm:
            current = _reseller_config(knm, account)["features"][which.value]
            accounts = knm.store.accounts
            if action == "reset":
                accounts.update_one({"_id": account}, {"$unset": {key: ""}})
            else:
                name = _feature(feature)
                names = set(current or [])
                names = names | {name} if action == "add" else names - {name}
                accounts.update_one({"_id": account}, {"$set": {key: sorted(names)}})
            config = _reseller_config(knm, account)
        _print(config, False)

    command.__name__ = f"reseller_{which.value}"
    command.__doc__ = (
        f"Edit a reseller's features.{which.value} list (add|remove ACCOUNT FEATURE, "
        "reset ACCOUNT)."
    )
    return command


@reseller_app.command("provider")
def reseller_provider(account: AccountArg, kind: Kind, module: Module) -> None:
    """Which module provides CNAM or E911 for a reseller's numbers ('default': the system's)."""

    value = _provider(module)
    key = f"number_manager.{kind.value}_provider"
    with open_knm() as knm:
        _reseller_config(knm, account)
        if value is None:
            knm.store.accounts.update_one({"_id": account}, {"$unset": {key: ""}})
        else:
            knm.store.accounts.update_one({"_id": account}, {"$set": {key: value}})
        config = _reseller_config(knm, account)
    _print(config, False)


for _which in ListName:
    system_app.command(_which.value)(_system_list(_which))
    reseller_app.command(_which.value)(_reseller_list(_which))


def _print(value: dict[str, Any], as_json: bool) -> None:

    if as_json:
        print_json(value)
        return
    for key, item in value.items():  # values as JSON (null: the default), never Python reprs
        typer.echo(f"{key}: {'(default)' if item is None else json.dumps(item)}")


def register(features_app: typer.Typer) -> None:
    """Add ``system`` and ``reseller`` to ``knm features``."""
    features_app.add_typer(system_app, name="system")
    features_app.add_typer(reseller_app, name="reseller")
