"""Who may read a CSV job and run a listing: the rules, each refusal naming its rule.

A job's status and results are its submitter's, and readable by whoever may read the job's
account: that account, one of its ancestors, ``system`` or a superduper admin (the relation
``numbers get`` uses). A ``list``/``list_all`` job reads its account's numbers, so its requester
must have that same relation to the account; ``dump*`` is for the master account only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from knm.domain import errors
from knm.domain.accounts import SYSTEM, AccountDirectory
from knm.domain.errors import KnmError

if TYPE_CHECKING:
    from knm.services.facade import Knm
    from knm.services.job_store import Job


def job_refusal(knm: Knm, job: Job, auth_by: str) -> KnmError | None:
    """403 when ``auth_by`` may not read ``job`` (its status, its results), saying why."""
    if auth_by in (SYSTEM, job.auth_account_id):
        return None
    accounts = AccountDirectory(knm.store.find_accounts({auth_by, job.account_id}))
    if accounts.may_read_account(auth_by, job.account_id):
        return None
    return errors.unauthorized(
        f"account '{auth_by}' may not read job {job.id}: it did not submit it and is not the "
        f"job's account '{job.account_id}' or one of its ancestors (nor system or a superduper "
        "admin)"
    )


def readable_jobs(knm: Knm, auth_by: str) -> dict[str, Any]:
    """The query of the jobs ``auth_by`` may read (every job for ``system`` and admins)."""
    if auth_by == SYSTEM or AccountDirectory(knm.store.find_accounts({auth_by})).is_admin(auth_by):
        return {}
    below = [d["_id"] for d in knm.store.accounts.find({"pvt_tree": auth_by}, {"_id": 1})]
    return {"$or": [{"auth_account_id": auth_by}, {"account_id": {"$in": [auth_by, *below]}}]}


def listing_refusal(knm: Knm, job: Job) -> KnmError | None:
    """403 when the job's requester may not run its listing, with the rule in the cause."""
    auth_by = job.auth_account_id
    if job.action in ("list", "list_all"):
        accounts = AccountDirectory(knm.store.find_accounts({auth_by, job.account_id} - {SYSTEM}))
        if accounts.may_read_account(auth_by, job.account_id):
            return None
        return errors.unauthorized(
            f"account '{auth_by}' may not list the numbers of account '{job.account_id}': "
            "it is not that account or one of its ancestors (nor system or a superduper admin)"
        )
    if _is_master(knm, auth_by):
        return None
    return errors.unauthorized(
        f"{job.action} is for the master account only (system or a superduper admin at the "
        f"root), not '{auth_by}'"
    )


def _is_master(knm: Knm, auth_by: str) -> bool:
    """KAZOO's dumps are for the master account: ``system`` or a superduper admin at the root."""
    if auth_by == SYSTEM:
        return True
    account = knm.store.get_account(auth_by)
    return account is not None and account.superduper_admin and not account.tree
