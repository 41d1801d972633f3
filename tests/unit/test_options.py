"""Operation options: defaults, which options were given, and ``but()``."""

from __future__ import annotations

import pydantic
import pytest

from knm.domain.accounts import SYSTEM
from knm.domain.number import NumberState
from knm.domain.options import Options

RESELLER = "account0000000000000000000000002"


def test_defaults_match_kazoo_default() -> None:
    options = Options()
    assert options.auth_by == SYSTEM
    assert options.batch_run is False
    assert options.mdn_run is False
    assert options.dry_run is False
    assert options.ported_in is False
    assert options.assign_to is None
    assert options.state is None
    assert options.module_name is None
    assert options.public_fields is None


class TestFieldsSet:
    def test_nothing_given(self) -> None:
        assert Options().model_fields_set == set()

    def test_given_options_only(self) -> None:
        options = Options(auth_by=RESELLER, ported_in=False, dry_run=True)
        assert options.model_fields_set == {"auth_by", "ported_in", "dry_run"}

    def test_default_value_given_explicitly_counts(self) -> None:
        assert "module_name" in Options(module_name=None).model_fields_set
        assert "public_fields" in Options(public_fields={"a": 1}).model_fields_set

    def test_auth_by_none_means_unknown_requester(self) -> None:
        options = Options(auth_by=None)
        assert options.auth_by is None
        assert options.model_fields_set == {"auth_by"}


class TestBut:
    def test_changes_and_keeps(self) -> None:
        base = Options(auth_by=RESELLER, dry_run=True)
        changed = base.but(assign_to=RESELLER, state=NumberState.RESERVED)
        assert changed.assign_to == RESELLER
        assert changed.state is NumberState.RESERVED
        assert changed.auth_by == RESELLER
        assert changed.dry_run is True
        assert changed.model_fields_set == {"auth_by", "dry_run", "assign_to", "state"}

    def test_original_untouched(self) -> None:
        base = Options()
        base.but(assign_to=RESELLER, module_name="knm_mdn")
        assert base.assign_to is None
        assert base.module_name is None
        assert base.model_fields_set == set()

    def test_clearing_an_option(self) -> None:
        base = Options(assign_to=RESELLER)
        cleared = base.but(assign_to=None)
        assert cleared.assign_to is None
        assert "assign_to" in cleared.model_fields_set

    def test_returns_options(self) -> None:
        assert isinstance(Options().but(batch_run=True), Options)


class TestValidation:
    def test_frozen(self) -> None:
        options = Options()
        with pytest.raises(pydantic.ValidationError):
            options.auth_by = RESELLER  # type: ignore[misc]

    def test_unknown_option_rejected(self) -> None:
        with pytest.raises(pydantic.ValidationError):
            Options(crossbar={"services": {}})  # type: ignore[call-arg]

    def test_state_coerced(self) -> None:
        assert Options(state="port_in").state is NumberState.PORT_IN

    def test_bad_state_rejected(self) -> None:
        with pytest.raises(pydantic.ValidationError):
            Options(state="deleted-ish")

    def test_public_fields_kept_verbatim(self) -> None:
        assert Options(public_fields={"a": 1}).public_fields == {"a": 1}

    def test_hashable_equal_by_value(self) -> None:
        assert Options(auth_by=RESELLER) == Options(auth_by=RESELLER)
        assert Options() != Options(dry_run=True)
