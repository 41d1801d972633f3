"""The knm facade: one object that owns the settings, the store and the services on top.

The CLI, the Celery tasks and the tests all start here, so they share one way of connecting and
one set of rules.
"""

from __future__ import annotations

from typing import Any

from pymongo.errors import DuplicateKeyError

from carriers.base import SearchResult
from carriers.inventory import InventoryBackedCarrier
from carriers.registry import CarrierRegistry, default_registry
from config.settings import Settings, get_settings
from knm.domain.accounts import Account, AccountDirectory, bad_account_id, is_account_id
from knm.domain.convert import MAX_E164_DIGITS
from knm.services.operations import NumberManager
from knm.services.search import Searcher, SearchQuery
from knm.store.dead_letters import DeadLetterStore
from knm.store.numbers import Store, connect
from knm.store.outcomes import OutcomeStore, RequestKeys

GENERATORS = {"managed": "knm_managed", "inum": "knm_inum"}


class InputError(ValueError):
    """Bad input from a caller: reported as one line, never as a traceback."""


class Knm:
    """knm's services bound to one store."""

    def __init__(
        self, store: Store, settings: Settings, carriers: CarrierRegistry | None = None
    ) -> None:
        self.settings = settings
        self.store = store
        self.numbers = NumberManager(store, settings, carriers or default_registry(settings))
        self.outcomes = OutcomeStore(store.db["request_outcomes"], settings.request_outcome_ttl_s)
        self.request_keys = RequestKeys(store.db["request_keys"], settings.request_outcome_ttl_s)
        self.dead_letters = DeadLetterStore(store.db["dead_letters"])
        self.searcher = Searcher(
            self.numbers.carrier_ctx, self.numbers.carriers, self.numbers.search_cache, settings
        )

    @classmethod
    def open(cls, settings: Settings | None = None) -> Knm:
        """Connect to the configured store (the embedded one when none is configured)."""
        settings = settings or get_settings()
        return cls(connect(settings), settings)

    def close(self) -> None:
        """Close the store's client (a CLI run opens one per invocation)."""
        self.store.db.client.close()

    # ------------------------------------------------------------------------------ accounts
    def create_account(
        self,
        account_id: str,
        name: str,
        *,
        parent: str | None = None,
        admin: bool = False,
        allow_additions: bool = False,
        reseller: bool = False,
        carrier_modules: list[str] | None = None,
    ) -> Account:
        """Create an account under ``parent``; its tree and reseller follow from the parent."""
        if not is_account_id(account_id):
            raise InputError(bad_account_id(account_id))
        if not name.strip():
            raise InputError("account name must not be empty")
        tree: list[str] = []
        reseller_id = account_id
        if parent is not None:
            parent_account = self.store.get_account(parent)
            if parent_account is None:
                raise InputError(f"parent account {parent} does not exist")
            tree = [*parent_account.tree, parent_account.id]
            reseller_id = (
                parent_account.id
                if parent_account.is_reseller
                else parent_account.reseller_id or parent_account.id
            )
        account = Account(
            id=account_id,
            name=name,
            parent=parent,
            tree=tree,
            superduper_admin=admin,
            allow_additions=allow_additions,
            is_reseller=reseller or parent is None,
            reseller_id=reseller_id,
        )
        if carrier_modules is not None:
            account.number_manager.carrier_modules = carrier_modules
        try:
            self.store.insert_account(account)
        except DuplicateKeyError:
            raise InputError(f"account {account_id} already exists") from None
        return account

    def get_account(self, account_id: str) -> Account | None:
        return self.store.get_account(account_id)

    # ------------------------------------------------------------------------------ search
    def search(self, query: SearchQuery) -> list[SearchResult]:
        """Search numbers for an account (or system-wide without one)."""
        unknown = [m for m in query.carriers or [] if m not in self.numbers.carriers]
        if unknown:
            known = ", ".join(self.numbers.carriers.names())
            raise InputError(f"unknown carrier module {', '.join(unknown)} (known: {known})")
        account = reseller = None
        if query.account_id is not None:
            accounts = AccountDirectory(self.store.find_accounts([query.account_id]))
            account = accounts.get(query.account_id)
            if account is None:
                raise InputError(f"account {query.account_id} does not exist")
            reseller_id = account.reseller_id or account.id
            reseller = account if reseller_id == account.id else self.get_account(reseller_id)
        return self.searcher.search(query, account, reseller)

    # ------------------------------------------------------------------------------ inventory
    def generate_numbers(
        self, kind: str, account_id: str, start: int, quantity: int
    ) -> dict[str, Any]:
        """``sup kazoo_numbers_maintenance generate_numbers managed|inum ACCOUNT START QTY``."""
        module = GENERATORS.get(kind)
        if module is None:
            raise InputError(f"unknown generator {kind!r}: expected one of {sorted(GENERATORS)}")
        if not is_account_id(account_id):
            raise InputError(bad_account_id(account_id))
        if start <= 0 or quantity <= 0:
            raise InputError("START and QUANTITY must be positive integers")
        if len(str(start + quantity - 1)) > MAX_E164_DIGITS:
            raise InputError(f"numbers have at most {MAX_E164_DIGITS} digits (E.164)")
        carrier = self.numbers.carriers.get(module, self.numbers.carrier_ctx)
        assert isinstance(carrier, InventoryBackedCarrier)
        return carrier.generate_numbers(account_id, start, quantity)
