"""Behaviour of knm.convert: KAZOO's conversion rules and eunit suites."""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytest

from config import defaults
from config.settings import get_settings, reset_settings
from knm.domain import convert
from knm.domain.convert import (
    available_classifiers,
    classify,
    is_1npan,
    is_normalized,
    is_npan,
    is_reconcilable,
    is_strip_plus,
    is_valid_e164,
    iso3166_alpha2,
    iso3166_alpha3,
    normalize,
    prefix_for_country,
    pretty_print,
    to_1npan,
    to_itu,
    to_npan,
    to_strip_plus,
)


@pytest.fixture(autouse=True)
def _default_settings(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Run every test against the built-in defaults, whatever the environment says."""
    for name in (
        "KNM_E164_CONVERTERS",
        "KNM_RECONCILE_REGEX",
        "KNM_CLASSIFIERS",
        "KNM_DEFAULT_COUNTRY",
    ):
        monkeypatch.delenv(name, raising=False)
    reset_settings()
    yield
    reset_settings()


NANP_FORMS = ["+12234567890", "12234567890", "2234567890"]

# --------------------------------------------------------------------------------------------
# normalize
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("number", NANP_FORMS)
def test_normalize_nanp_forms(number: str) -> None:
    assert normalize(number) == "+12234567890"


@pytest.mark.parametrize(
    ("number", "expected"),
    [
        ("011441234567", "+441234567"),  # first alternative: group 1
        ("00441234567", "+441234567"),  # second alternative: last capture is group 2
        ("1000", "1000"),
        ("911", "911"),
        ("44123456", "+44123456"),  # 8+ digits not starting 0/1 -> already international
        ("4412345", "4412345"),  # 7 digits: nothing matches
        ("0114412", "0114412"),  # 011 + fewer than 5 digits
        ("+anything", "+anything"),  # '+' means normalized, no validation
        ("", ""),
    ],
)
def test_normalize_examples(number: str, expected: str) -> None:
    assert normalize(number) == expected


def test_default_converters_are_in_kazoo_order() -> None:
    assert list(get_settings().e164_converters.items()) == [
        (r"^(\+?1)?([2-9][0-9]{2}[2-9][0-9]{6})$", {"prefix": "+1"}),
        (r"^011(\d{5,})$|^00(\d{5,})$", {"prefix": "+"}),
        (r"^[2-9]\d{7,}$", {"prefix": "+"}),
    ]


def test_normalize_custom_converters_prefix_suffix_and_order() -> None:
    converters = {
        r"^9(\d{4})$": {"prefix": "+4930", "suffix": "0"},
        r"^\d{4}$": {"prefix": "ext-"},  # no group: the whole match
        r"^9\d+$": {"prefix": "never"},  # shadowed by the first entry for 9xxxx
    }
    assert normalize("91234", converters) == "+49301234" + "0"
    assert normalize("1000", converters) == "ext-1000"
    assert normalize("2234567890", converters) == "2234567890"  # defaults not consulted
    assert normalize("+15551234567", converters) == "+15551234567"
    assert normalize("1000", {}) == "1000"


def test_normalize_last_capture_is_highest_participating_group() -> None:
    converters = {r"^(a)?(b)?(c)?x(\d+)?$": {"prefix": "<", "suffix": ">"}}
    assert normalize("abx", converters) == "<b>"  # trailing unset groups are skipped
    assert normalize("ax", converters) == "<a>"
    assert normalize("x", converters) == "<x>"  # none participated: whole match
    assert normalize("cx12", converters) == "<12>"


def test_normalize_unicode_digits_are_not_digits() -> None:
    # PCRE's \d is ASCII-only; Arabic-Indic digits must not be converted.
    arabic = "\u0662\u0662\u0663\u0664\u0665\u0666\u0667\u0668\u0669\u0660"
    assert normalize(arabic) == arabic


def test_normalize_follows_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KNM_E164_CONVERTERS", '{"^(\\\\d{4})$": {"prefix": "+99"}}')
    reset_settings()
    assert normalize("1000") == "+991000"
    assert normalize("2234567890") == "2234567890"


# --------------------------------------------------------------------------------------------
# NANP conversions
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("number", NANP_FORMS)
def test_to_npan_and_to_1npan(number: str) -> None:
    assert to_npan(number) == "2234567890"
    assert to_1npan(number) == "12234567890"


@pytest.mark.parametrize("number", ["1000", "+441234567", "1234567890", "22345678901"])
def test_non_nanp_numbers_are_left_alone(number: str) -> None:
    assert to_npan(number) == number
    assert to_1npan(number) == number


def test_to_strip_plus() -> None:
    assert to_strip_plus("2234567890") == "12234567890"
    assert to_strip_plus("011441234567") == "441234567"
    assert to_strip_plus("1000") == "1000"


def test_identity_predicates() -> None:
    assert is_npan("2234567890")
    assert not is_npan("12234567890")
    assert is_1npan("12234567890")
    assert not is_1npan("+12234567890")
    assert is_normalized("+12234567890")
    assert is_normalized("1000")  # unmatched numbers are their own normal form
    assert not is_normalized("2234567890")
    assert is_strip_plus("12234567890")
    assert not is_strip_plus("+12234567890")


def _expected_conversions(digits: str) -> tuple[str, str, str]:
    """Independent oracle for (normalize, to_npan, to_1npan) from the default regexes."""
    if len(digits) == 10:  # starts 2-9 within the sampled range
        if digits[3] in "23456789":  # NXX valid: NANP
            return "+1" + digits, digits, "1" + digits
        return "+" + digits, digits, digits  # 8+ digits starting 2-9: "international"
    assert len(digits) == 11
    assert digits[0] == "1"
    if digits[1] in "23456789" and digits[4] in "23456789":
        return "+" + digits, digits[1:], digits
    return digits, digits, digits  # 1 + invalid NPA/NXX: no converter matches


def test_property_nanp_range_consistency() -> None:
    """KAZOO's PropEr properties over [2002000000, 19999999999], with real regex semantics.

    KAZOO's property text says 11 digits -> '+' + digits and 10 digits -> '+1' + digits; that
    only holds for NANP-shaped numbers: 10-digit numbers with an NXX starting 0/1 fall to the
    '^[2-9]\\d{7,}$' converter ('+' + digits), and 11-digit numbers whose NPA or NXX starts 0/1
    match no converter and stay unchanged.
    """
    rng = random.Random(20240601)
    low, high = 2002000000, 19999999999
    samples = {rng.randint(low, high) for _ in range(300)}
    samples |= {rng.randint(low, 9999999999) for _ in range(100)}
    samples |= {
        low,
        2001999999 + 1,
        2341000000,
        9999999999,
        10000000000,
        11234567890,
        12002000000,
        12001999999,
        19999999999,
    }
    seen_kinds: set[str] = set()
    for value in sorted(samples):
        digits = str(value)
        expected_e164, expected_npan, expected_1npan = _expected_conversions(digits)
        assert normalize(digits) == expected_e164, digits
        assert to_npan(digits) == expected_npan, digits
        assert to_1npan(digits) == expected_1npan, digits
        if expected_e164 == "+1" + expected_npan:
            # NANP-shaped: every form agrees on the same +1NPANXXXXXX
            seen_kinds.add(f"nanp{len(digits)}")
            assert expected_e164 == "+1" + to_npan(digits)
            assert to_1npan(digits) == "1" + to_npan(digits)
            assert normalize(to_npan(digits)) == normalize(to_1npan(digits)) == expected_e164
            assert to_npan(expected_e164) == to_npan(digits)
            assert is_npan(to_npan(digits))
            assert is_1npan(to_1npan(digits))
            assert to_strip_plus(digits) == to_1npan(digits)
        else:
            seen_kinds.add(f"other{len(digits)}")
        assert is_normalized(normalize(digits))
    assert seen_kinds == {"nanp10", "nanp11", "other10", "other11"}


# --------------------------------------------------------------------------------------------
# Reconcilability
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("number", "expected"),
    [
        ("1000", False),
        ("911", False),
        ("4156301234", True),
        ("14156301234", True),
        ("+14156301234", True),
        ("011441234567", True),  # normalized to +441234567
        ("00441234567", True),
        ("011123", True),  # too short to convert, but the raw 011 form is reconcilable
        ("+0123456789", False),
        ("+4412345", False),  # '+' then only 7 digits
        ("", False),
    ],
)
def test_is_reconcilable_defaults(number: str, expected: bool) -> None:
    assert is_reconcilable(number) is expected


def test_is_reconcilable_custom_regex_and_converters() -> None:
    assert is_reconcilable("1000", r"^\d{4}$")
    assert not is_reconcilable("4156301234", r"^\d{4}$")  # normalized first: +14156301234
    assert is_reconcilable("1000", r"^\+99", converters={r"^(\d{4})$": {"prefix": "+99"}})


# --------------------------------------------------------------------------------------------
# Classification
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("number", "expected"),
    [
        ("8005551212", "tollfree_us"),
        ("+18885551212", "tollfree_us"),
        ("18225551212", "tollfree_us"),
        ("+19005551212", "toll_us"),
        ("911", "emergency"),
        ("711", "emergency"),
        ("+18095551234", "caribbean"),
        ("8765551234", "caribbean"),
        ("4156301234", "did_us"),
        ("+14158867900", "did_us"),
        ("011441234567", "international"),
        ("+33123456789", "international"),
        ("1000", "unknown"),
        ("", "unknown"),
    ],
)
def test_classify_defaults(number: str, expected: str) -> None:
    assert classify(number) == expected


def test_classify_honours_table_order() -> None:
    # Gap 22: the schema's alphabetical order puts did_us first and swallows toll-free numbers.
    alphabetical = dict(sorted(defaults.CLASSIFIERS.items()))
    assert classify("8005551212", alphabetical) == "did_us"
    assert classify("8005551212") == "tollfree_us"


def test_classify_bare_string_classifiers_and_no_match() -> None:
    table: dict[str, dict[str, object] | str] = {"short": r"^\d{3,4}$", "nanp": r"^\+1"}
    assert classify("1000", table) == "short"
    assert classify("2234567890", table) == "nanp"
    assert classify("+441234567", table) is None
    assert classify("1000", {}) is None


def test_classify_object_without_regex_matches_only_empty() -> None:
    table: dict[str, dict[str, object] | str] = {"blank": {"friendly_name": "Blank"}}
    assert classify("", table) == "blank"
    assert classify("1000", table) is None


def test_available_classifiers_defaults() -> None:
    result = available_classifiers()
    assert list(result) == list(defaults.CLASSIFIERS)
    assert result["tollfree_us"]["friendly_name"] == "US TollFree"
    assert result["emergency"]["emergency"] is True


def test_available_classifiers_converts_bare_strings_and_fills_friendly_name() -> None:
    table: dict[str, dict[str, object] | str] = {
        "legacy": r"^\d+$",
        "nameless": {"regex": r"^\+"},
        "named": {"regex": r"^x", "friendly_name": "Named"},
    }
    assert available_classifiers(table) == {
        "legacy": {"regex": r"^\d+$", "friendly_name": "legacy"},
        "nameless": {"regex": r"^\+", "friendly_name": "nameless"},
        "named": {"regex": r"^x", "friendly_name": "Named"},
    }
    assert table["nameless"] == {"regex": r"^\+"}  # input not mutated


# --------------------------------------------------------------------------------------------
# Pretty printing
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "expected"),
    [
        ("SS(###) ### - *", "(415) 886 - 7900"),
        ("S\\SS(###\\#) ### - *\\*", "S(415#) 886 - 7900*"),
        ("*", "+14158867900"),
    ],
)
def test_pretty_print_spec_examples(fmt: str, expected: str) -> None:
    assert pretty_print("+14158867900", fmt) == expected


def test_pretty_print_format_edge_cases() -> None:
    assert pretty_print("+14158867900", "") == ""
    assert pretty_print("+1415", "SS###-####!") == "415-!"  # literals survive exhaustion
    assert pretty_print("+1415", "\\x#") == "\\x+"  # backslash before other chars is literal
    assert pretty_print("+1415", "#\\") == "+\\"
    assert pretty_print("4158867900", "SS###") == "415"  # walks the normalized number


def test_pretty_print_uses_classifier_format() -> None:
    assert pretty_print("4158867900") == "(415) 886 - 7900"
    assert pretty_print("8005551212") == "(800) 555 - 1212"
    assert pretty_print("+18095551234") == "(809) 555 - 1234"


def test_pretty_print_without_format() -> None:
    assert pretty_print(None) == "unknown"
    assert pretty_print("+441234567") == "+441234567"  # international: no format, not +1
    assert pretty_print("011441234567") == "011441234567"  # returned as given
    assert pretty_print("911") == "911"
    assert pretty_print("1000") == "1000"


def test_pretty_print_plus_one_default_and_first_match_decides() -> None:
    # A +1 number matching a classifier without pretty_print gets the US default ...
    bare: dict[str, dict[str, object] | str] = {"any": r"^\+1"}
    assert pretty_print("4158867900", classifiers=bare) == "(415) 886 - 7900"
    # ... and the first match decides even if a later classifier has a format.
    table: dict[str, dict[str, object] | str] = {
        "first": {"regex": r"^\+44"},
        "second": {"regex": r"^\+", "pretty_print": "S*"},
    }
    assert pretty_print("+441234567", classifiers=table) == "+441234567"
    assert pretty_print("+331234567", classifiers=table) == "331234567"
    # No classifier at all: +1 default still applies.
    assert pretty_print("4158867900", classifiers={}) == "(415) 886 - 7900"


# --------------------------------------------------------------------------------------------
# Countries
# --------------------------------------------------------------------------------------------

ISO_PAIRS = [("USA", "US"), ("FRO", "FO"), ("DEU", "DE"), ("FRA", "FR")]


@pytest.mark.parametrize(("alpha3", "alpha2"), ISO_PAIRS)
def test_iso3166_round_trip(alpha3: str, alpha2: str) -> None:
    assert iso3166_alpha2(alpha3) == alpha2
    assert iso3166_alpha3(alpha2) == alpha3
    assert iso3166_alpha2(alpha3.lower()) == alpha2


def test_iso3166_table_is_complete_and_bijective() -> None:
    import phonenumbers

    a2_to_a3 = convert._A2_TO_A3
    assert len(a2_to_a3) == 249
    assert len(set(a2_to_a3.values())) == 249
    assert all(len(a2) == 2 and len(a3) == 3 for a2, a3 in a2_to_a3.items())
    # Every real country phonenumbers knows has an alpha-3 code (AC/TA/XK are not ISO 3166-1).
    assert set(phonenumbers.SUPPORTED_REGIONS) - set(a2_to_a3) == {"AC", "TA", "XK"}
    for a2, a3 in a2_to_a3.items():
        assert iso3166_alpha2(a3) == a2
        assert to_itu(a2).startswith("+")  # every ISO country has a dial code


@pytest.mark.parametrize("bad", ["XXX", "US", ""])
def test_iso3166_alpha2_unknown(bad: str) -> None:
    with pytest.raises(ValueError, match="alpha-3"):
        iso3166_alpha2(bad)


def test_iso3166_alpha3_unknown() -> None:
    with pytest.raises(ValueError, match="alpha-2"):
        iso3166_alpha3("ZZ")


@pytest.mark.parametrize(
    ("alpha2", "itu"),
    [("US", "+1"), ("FR", "+33"), ("GB", "+44"), ("DE", "+49"), ("fr", "+33"), ("AQ", "+672")],
)
def test_to_itu(alpha2: str, itu: str) -> None:
    assert to_itu(alpha2) == itu


@pytest.mark.parametrize("bad", ["ZZ", "", "USA1"])
def test_to_itu_unknown(bad: str) -> None:
    with pytest.raises(ValueError, match="ITU"):
        to_itu(bad)


@pytest.mark.parametrize(
    ("country", "prefix"),
    [
        ("US", "+1"),
        ("FR", "+33"),
        ("fr", "+33"),
        ("FRA", "+33"),  # alpha-3 tolerated
        (None, "+1"),
        ("", "+1"),
        ("ZZ", "+1"),
        ("nonsense", "+1"),
    ],
)
def test_prefix_for_country(country: str | None, prefix: str) -> None:
    assert prefix_for_country(country) == prefix


def test_prefix_for_country_uses_configured_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KNM_DEFAULT_COUNTRY", "DE")
    reset_settings()
    assert prefix_for_country(None) == "+49"
    assert prefix_for_country("ZZ") == "+49"
    assert prefix_for_country("FR") == "+33"
    monkeypatch.setenv("KNM_DEFAULT_COUNTRY", "ZZ")
    reset_settings()
    assert prefix_for_country(None) == "+1"  # last-resort fallback


@pytest.mark.parametrize(
    ("number", "expected"),
    [
        ("+14158867900", True),
        ("+441234567890", True),
        ("+33123456789", True),
        ("14158867900", False),  # not E.164 without '+'
        ("+1", False),
        ("+", False),
        ("+abc", False),
        ("+999123456789", False),  # no such country code
        ("", False),
    ],
)
def test_is_valid_e164(number: str, expected: bool) -> None:
    assert is_valid_e164(number) is expected
