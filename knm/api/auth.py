"""Who is asking: ``X-Auth-Token`` names an API key, the key names the requester (``auth_by``).

The requester is never a field of the request. No token, an unknown or a revoked one: 401 in
the crossbar envelope. Past that, KAZOO's rules decide exactly as for the CLI: a route under
``/v2/accounts/{A}`` needs the requester to be ``A``, one of its ancestors or a superduper admin
(crossbar's account access), and each number operation applies knm's own authorization.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Header, Request

from knm.api import envelope
from knm.api.context import ApiContext, get_context
from knm.domain.accounts import Account, AccountDirectory, bad_account_id, is_account_id

#: The most a token may be (a key is 43 characters): longer ones are refused unread.
MAX_TOKEN_CHARS = 256


@dataclass(frozen=True)
class Requester:
    """The authenticated requester of one request, with the request's id and the context."""

    auth_by: str
    request_id: str
    ctx: ApiContext
    #: The path's account and the requester's, read with the key (``None``: not read yet).
    path_accounts: tuple[str, AccountDirectory] | None = field(default=None, compare=False)


def _request_id(request: Request) -> str:
    value = request.scope.get("state", {}).get("request_id")
    return value if isinstance(value, str) else envelope.new_request_id()


def requester(
    request: Request,
    ctx: Annotated[ApiContext, Depends(get_context)],
    token: Annotated[
        str | None,
        Header(alias="X-Auth-Token", description="An API key ('knm api-keys create ACCOUNT')."),
    ] = None,
) -> Requester:
    """The route dependency of every authenticated route."""
    if not token:
        raise envelope.unauthorized(
            "missing X-Auth-Token header: create a key with 'knm api-keys create ACCOUNT'"
        )
    if len(token) > MAX_TOKEN_CHARS:
        raise envelope.unauthorized("invalid credentials")
    path_account = request.path_params.get("account_id")
    if not (isinstance(path_account, str) and is_account_id(path_account)):
        path_account = None
    known = None
    if path_account is not None:
        # one read for the key and the accounts the route checks (check_account)
        account, docs = ctx.keys.account_with_accounts(
            token.strip(), path_account, ctx.knm.store.accounts.name
        )
        known = (path_account, AccountDirectory(Account.from_document(d) for d in docs))
    else:
        account = ctx.keys.account_of(token.strip())
    if account is None:
        raise envelope.unauthorized("invalid credentials (unknown or revoked key)")
    return Requester(auth_by=account, request_id=_request_id(request), ctx=ctx, path_accounts=known)


Auth = Annotated[Requester, Depends(requester)]


def check_account(who: Requester, account_id: str) -> None:
    """The account of the path exists and the requester may act in it (crossbar's rule)."""
    if not is_account_id(account_id):
        raise envelope.invalid_field("account_id", "pattern", bad_account_id(account_id))
    if who.path_accounts is not None and who.path_accounts[0] == account_id:
        accounts = who.path_accounts[1]  # read with the key
    else:
        accounts = AccountDirectory(who.ctx.knm.store.find_accounts({who.auth_by, account_id}))
    if account_id not in accounts:
        raise envelope.bad_identifier(account_id, "account")
    if not accounts.may_read_account(who.auth_by, account_id):
        raise envelope.forbidden(
            f"account '{who.auth_by}' may not act in account '{account_id}': it is not that "
            "account or one of its ancestors (nor a superduper admin)"
        )
