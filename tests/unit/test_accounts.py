"""The authorization model over KAZOO's fixture account tree.

MASTER is a superduper admin allowed additions; RESELLER is allowed additions; CHILD and 0004 sit
below it; UNRELATED is a 32-character id with no account document.
"""

from __future__ import annotations

import pytest

from knm.domain.accounts import (
    ADDITIONS_CREATION_STATES,
    ADMIN_CREATION_STATES,
    SYSTEM,
    Account,
    AccountDirectory,
    NumberManagerConfig,
    is_account_id,
)
from knm.domain.number import NumberState, PhoneNumber

MASTER = "account0000000000000000000000001"
RESELLER = "account0000000000000000000000002"
CHILD = "account0000000000000000000000003"
SUB = "account0000000000000000000000004"
UNRELATED = "unrelated_account_b113394f16cb71"
NUM = "+15551233322"


@pytest.fixture
def accounts() -> AccountDirectory:
    return AccountDirectory(
        [
            Account(
                id=MASTER,
                name="master",
                tree=[],
                superduper_admin=True,
                allow_additions=True,
                is_reseller=True,
            ),
            Account(
                id=RESELLER,
                name="reseller",
                parent=MASTER,
                tree=[MASTER],
                allow_additions=True,
                is_reseller=True,
            ),
            Account(
                id=CHILD,
                name="child",
                parent=RESELLER,
                tree=[MASTER, RESELLER],
                reseller_id=RESELLER,
                number_manager=NumberManagerConfig(carrier_modules=["knm_local", "knm_bandwidth2"]),
            ),
            Account(
                id=SUB,
                name="sub",
                parent=CHILD,
                tree=[MASTER, RESELLER, CHILD],
                reseller_id=RESELLER,
            ),
        ]
    )


def number(
    state: NumberState = NumberState.IN_SERVICE, assigned_to: str | None = RESELLER
) -> PhoneNumber:
    return PhoneNumber(number=NUM, state=state, assigned_to=assigned_to)


def test_fixture_ids_are_account_ids() -> None:
    for account_id in (MASTER, RESELLER, CHILD, SUB, UNRELATED):
        assert len(account_id) == 32
        assert is_account_id(account_id)
    for bad in (
        SYSTEM,
        None,
        "",
        MASTER[:-1],
        MASTER + "0",
        42,
        "account000000000000000000000000-",
    ):
        assert not is_account_id(bad)


class TestIsAdmin:
    @pytest.mark.parametrize(
        ("auth_by", "expected"),
        [
            (SYSTEM, True),
            (MASTER, True),
            (RESELLER, False),
            (CHILD, False),
            (SUB, False),
            (UNRELATED, False),
            (None, False),
        ],
    )
    def test_is_admin(
        self, accounts: AccountDirectory, auth_by: str | None, expected: bool
    ) -> None:
        assert accounts.is_admin(auth_by) is expected


class TestAncestry:
    @pytest.mark.parametrize(
        ("ancestor", "account", "expected"),
        [
            (MASTER, MASTER, True),
            (MASTER, RESELLER, True),
            (MASTER, SUB, True),
            (RESELLER, CHILD, True),
            (RESELLER, SUB, True),
            (CHILD, SUB, True),
            (CHILD, RESELLER, False),
            (SUB, CHILD, False),
            (RESELLER, MASTER, False),
            (UNRELATED, UNRELATED, True),
            (MASTER, UNRELATED, False),
            (UNRELATED, CHILD, False),
        ],
    )
    def test_is_ancestor_or_self(
        self, accounts: AccountDirectory, ancestor: str, account: str, expected: bool
    ) -> None:
        assert accounts.is_ancestor_or_self(ancestor, account) is expected


class TestIsAuthorized:
    def test_system_always(self, accounts: AccountDirectory) -> None:
        for pn in (number(), number(assigned_to=None), number(assigned_to=UNRELATED)):
            assert accounts.is_authorized(pn, SYSTEM, None)
            assert accounts.is_authorized(pn, SYSTEM, UNRELATED)

    def test_undefined_never(self, accounts: AccountDirectory) -> None:
        assert not accounts.is_authorized(number(), None, None)
        assert not accounts.is_authorized(number(assigned_to=None), None, RESELLER)

    @pytest.mark.parametrize(
        ("auth_by", "expected"),
        [(MASTER, True), (RESELLER, False), (CHILD, False), (UNRELATED, False)],
    )
    def test_unassigned_without_assign_to_needs_admin(
        self, accounts: AccountDirectory, auth_by: str, expected: bool
    ) -> None:
        assert accounts.is_authorized(number(assigned_to=None), auth_by, None) is expected

    @pytest.mark.parametrize(
        ("auth_by", "expected"),
        [
            (MASTER, True),
            (RESELLER, True),
            (CHILD, True),
            (SUB, False),
            (UNRELATED, False),
        ],
    )
    def test_unassigned_with_assign_to(
        self, accounts: AccountDirectory, auth_by: str, expected: bool
    ) -> None:
        assert accounts.is_authorized(number(assigned_to=None), auth_by, CHILD) is expected

    @pytest.mark.parametrize(
        ("owner", "auth_by", "expected"),
        [
            (RESELLER, MASTER, True),
            (RESELLER, RESELLER, True),
            (RESELLER, CHILD, False),  # a sub-account cannot manage its parent's numbers
            (RESELLER, UNRELATED, False),
            (CHILD, RESELLER, True),
            (CHILD, CHILD, True),
            (CHILD, SUB, False),
            (SUB, RESELLER, True),
            (UNRELATED, MASTER, True),  # admin
            (UNRELATED, RESELLER, False),
            (UNRELATED, UNRELATED, True),  # self, even without a document
        ],
    )
    def test_assigned(
        self, accounts: AccountDirectory, owner: str, auth_by: str, expected: bool
    ) -> None:
        assert accounts.is_authorized(number(assigned_to=owner), auth_by, None) is expected

    def test_assigned_owner_wins_over_assign_to(self, accounts: AccountDirectory) -> None:
        pn = number(assigned_to=RESELLER)
        assert not accounts.is_authorized(pn, CHILD, CHILD)
        assert accounts.is_authorized(number(assigned_to=CHILD), RESELLER, UNRELATED)


class TestIsReservedFromParent:
    @pytest.mark.parametrize(
        ("auth_by", "expected"),
        [
            (CHILD, True),  # a descendant may take a number its ancestor reserved
            (SUB, True),
            (RESELLER, True),  # self
            (MASTER, False),  # an ancestor of the owner, not a descendant
            (UNRELATED, False),
            (SYSTEM, False),
            (None, False),
        ],
    )
    def test_reserved_by_reseller(
        self, accounts: AccountDirectory, auth_by: str | None, expected: bool
    ) -> None:
        pn = number(NumberState.RESERVED, RESELLER)
        assert accounts.is_reserved_from_parent(pn, auth_by) is expected

    @pytest.mark.parametrize("auth_by", [UNRELATED, CHILD, RESELLER, SYSTEM])
    def test_reserved_by_superduper_admin_is_takeable_by_anyone(
        self, accounts: AccountDirectory, auth_by: str
    ) -> None:
        """Gap 10: the owner being a superduper admin is enough."""
        assert accounts.is_reserved_from_parent(number(NumberState.RESERVED, MASTER), auth_by)

    @pytest.mark.parametrize(
        "state", [s for s in NumberState if s is not NumberState.RESERVED], ids=str
    )
    def test_only_reserved_numbers(self, accounts: AccountDirectory, state: NumberState) -> None:
        assert not accounts.is_reserved_from_parent(number(state, RESELLER), CHILD)
        assert not accounts.is_reserved_from_parent(number(state, MASTER), UNRELATED)

    def test_unassigned_reserved(self, accounts: AccountDirectory) -> None:
        assert not accounts.is_reserved_from_parent(number(NumberState.RESERVED, None), CHILD)

    def test_owner_without_document(self, accounts: AccountDirectory) -> None:
        pn = number(NumberState.RESERVED, UNRELATED)
        assert accounts.is_reserved_from_parent(pn, UNRELATED)
        assert not accounts.is_reserved_from_parent(pn, CHILD)


class TestIsVisible:
    @pytest.mark.parametrize("auth_by", [SYSTEM, MASTER, RESELLER, CHILD, SUB, UNRELATED, None])
    def test_available_is_visible_to_everyone(
        self, accounts: AccountDirectory, auth_by: str | None
    ) -> None:
        pn = number(NumberState.AVAILABLE, None)
        assert accounts.is_visible(pn, auth_by, None)

    @pytest.mark.parametrize(
        ("auth_by", "expected"),
        [
            (SYSTEM, True),
            (MASTER, True),
            (RESELLER, True),
            (CHILD, False),
            (SUB, False),
            (UNRELATED, False),
            (None, False),
        ],
    )
    def test_in_service_of_reseller(
        self, accounts: AccountDirectory, auth_by: str | None, expected: bool
    ) -> None:
        pn = number(NumberState.IN_SERVICE, RESELLER)
        assert accounts.is_visible(pn, auth_by, None) is expected

    @pytest.mark.parametrize(
        ("auth_by", "expected"),
        [(MASTER, True), (RESELLER, True), (CHILD, True), (SUB, True), (UNRELATED, False)],
    )
    def test_reserved_by_reseller(
        self, accounts: AccountDirectory, auth_by: str, expected: bool
    ) -> None:
        pn = number(NumberState.RESERVED, RESELLER)
        assert accounts.is_visible(pn, auth_by, None) is expected

    def test_reserved_by_master_visible_to_unrelated(self, accounts: AccountDirectory) -> None:
        assert accounts.is_visible(number(NumberState.RESERVED, MASTER), UNRELATED, None)

    def test_assign_to_counts_for_unassigned_numbers(self, accounts: AccountDirectory) -> None:
        pn = number(NumberState.DISCOVERY, None)
        assert accounts.is_visible(pn, RESELLER, CHILD)
        assert not accounts.is_visible(pn, RESELLER, None)
        assert not accounts.is_visible(pn, CHILD, RESELLER)


class TestAllowedCreationStates:
    def test_admin_order(self) -> None:
        assert ADMIN_CREATION_STATES == (
            NumberState.AGING,
            NumberState.AVAILABLE,
            NumberState.IN_SERVICE,
            NumberState.PORT_IN,
            NumberState.RESERVED,
        )
        assert ADDITIONS_CREATION_STATES == (NumberState.IN_SERVICE, NumberState.RESERVED)

    @pytest.mark.parametrize(
        ("auth_by", "expected"),
        [
            (None, ()),
            (SYSTEM, ADMIN_CREATION_STATES),
            (MASTER, ADMIN_CREATION_STATES),
            (RESELLER, (NumberState.IN_SERVICE, NumberState.RESERVED)),
            (CHILD, ()),
            (SUB, ()),
            (UNRELATED, ()),
        ],
    )
    def test_states(
        self,
        accounts: AccountDirectory,
        auth_by: str | None,
        expected: tuple[NumberState, ...],
    ) -> None:
        assert accounts.allowed_creation_states(auth_by) == expected

    def test_admin_without_additions_flag_still_admin(self) -> None:
        """Gap 32: admins may create in every pool state regardless of allow_additions."""
        directory = AccountDirectory([Account(id=MASTER, name="m", superduper_admin=True)])
        assert directory.allowed_creation_states(MASTER) == ADMIN_CREATION_STATES


class TestDirectory:
    def test_lookup(self, accounts: AccountDirectory) -> None:
        assert MASTER in accounts
        assert UNRELATED not in accounts
        assert accounts.get(None) is None
        assert accounts.get(UNRELATED) is None
        got = accounts.get(CHILD)
        assert got is not None
        assert got.tree == [MASTER, RESELLER]

    def test_add(self, accounts: AccountDirectory) -> None:
        accounts.add(Account(id=UNRELATED, name="u", superduper_admin=True))
        assert accounts.is_admin(UNRELATED)

    def test_reseller_of(self, accounts: AccountDirectory) -> None:
        assert accounts.reseller_of(CHILD) == RESELLER
        assert accounts.reseller_of(SUB) == RESELLER
        assert accounts.reseller_of(MASTER) == MASTER
        assert accounts.reseller_of(UNRELATED) is None
        assert accounts.reseller_of(None) is None


class TestAccountDocument:
    def test_round_trip(self, accounts: AccountDirectory) -> None:
        child = accounts.get(CHILD)
        assert child is not None
        doc = child.to_document()
        assert doc["_id"] == CHILD
        assert doc["pvt_tree"] == [MASTER, RESELLER]
        assert doc["pvt_superduper_admin"] is False
        assert doc["pvt_wnm_allow_additions"] is False
        assert doc["number_manager"] == {"carrier_modules": ["knm_local", "knm_bandwidth2"]}
        assert Account.from_document(doc) == child

    def test_kazoo_style_document(self) -> None:
        account = Account.from_document(
            {
                "_id": MASTER,
                "name": "master",
                "pvt_tree": [],
                "pvt_superduper_admin": True,
                "pvt_wnm_allow_additions": True,
                "number_manager": {"features": {"allow": ["cnam"], "deny": ["e911"]}},
            }
        )
        assert account.superduper_admin
        assert account.allow_additions
        assert account.enabled
        assert account.number_manager.features_allow == ["cnam"]
        assert account.number_manager.features_deny == ["e911"]
        assert account.to_document()["number_manager"] == {
            "features": {"allow": ["cnam"], "deny": ["e911"]}
        }
