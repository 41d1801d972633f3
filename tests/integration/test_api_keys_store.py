"""The API's key store: a key, its account and the path's account in one round trip."""

from __future__ import annotations

from typing import Any

import pymongo
from pymongo.database import Database

from config.settings import Settings
from knm.services.facade import Knm
from knm.store.api_keys import ApiKeyStore
from knm.store.numbers import Store
from tests.command_log import CommandLog

Doc = dict[str, Any]
RESELLER = "a1" * 16
CHILD = "b2" * 16
UNKNOWN = "c3" * 16


def test_a_key_and_the_accounts_a_route_needs_are_one_command(
    mongo_db: Database[Doc], mongo_url: str
) -> None:
    store = Store(mongo_db)
    store.ensure_indexes()
    knm = Knm(store, Settings())
    knm.create_account(RESELLER, "Reseller", allow_additions=True)
    knm.create_account(CHILD, "Child", parent=RESELLER, allow_additions=True)
    key, record = ApiKeyStore(mongo_db).create(RESELLER, "test")

    listener = CommandLog()
    client: pymongo.MongoClient[Doc] = pymongo.MongoClient(mongo_url, event_listeners=[listener])
    try:
        keys = ApiKeyStore(client[mongo_db.name])
        account, docs = keys.account_with_accounts(key, CHILD)
        assert listener.names == ["aggregate"]
        assert account == RESELLER
        assert {d["_id"] for d in docs} == {RESELLER, CHILD}

        account, docs = keys.account_with_accounts(key, UNKNOWN)  # the path's account is unknown
        assert account == RESELLER
        assert [d["_id"] for d in docs] == [RESELLER]

        account, docs = keys.account_with_accounts(key, None)
        assert (account, [d["_id"] for d in docs]) == (RESELLER, [RESELLER])

        assert keys.account_with_accounts("not-a-key", CHILD) == (None, [])
        assert keys.account_of(key) == RESELLER
        assert keys.account_of("not-a-key") is None
        keys.revoke(record.id)
        assert keys.account_with_accounts(key, CHILD) == (None, [])
        assert keys.account_of(key) is None
    finally:
        client.close()
