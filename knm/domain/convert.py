"""Number normalization, conversion, classification and pretty printing.

This mirrors KAZOO's ``knm_converters`` / ``knm_converter_regex`` / ``knm_util`` so that numbers
are keyed, reconciled, billed and displayed exactly as KAZOO would: every bulk operation
normalizes its inputs with these functions before touching storage, so any deviation here would
split one number into two documents.

Regexes come from configuration (``e164_converters``, ``reconcile_regex``, ``classifiers``) and
are compiled once per distinct pattern. They are evaluated with ``re.ASCII`` so ``\\d`` means
``[0-9]`` as in PCRE (Erlang's ``re`` on binaries), and with ``re.search`` (un-anchored) like
``re:run``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import lru_cache

import phonenumbers

from config.settings import get_settings

__all__ = [
    "MAX_E164_DIGITS",
    "MAX_INPUT_CHARS",
    "NANP_PRETTY_PRINT",
    "available_classifiers",
    "classify",
    "is_1npan",
    "is_normalized",
    "is_npan",
    "is_reconcilable",
    "is_strip_plus",
    "is_valid_e164",
    "iso3166_alpha2",
    "iso3166_alpha3",
    "normalize",
    "prefix_for_country",
    "pretty_print",
    "to_1npan",
    "to_itu",
    "to_npan",
    "to_strip_plus",
]

#: E.164 numbers have at most 15 digits (ITU-T E.164).
MAX_E164_DIGITS = 15
#: Longer inputs cannot be a number in any form knm takes (``011`` + 15 digits, with room).
MAX_INPUT_CHARS = 32

#: Fallback pretty-print format for numbers starting ``+1`` (KAZOO's ``maybe_use_us_default``).
NANP_PRETTY_PRINT = "SS(###) ### - ####"

_NPAN_RE = re.compile(r"^(\+?1)?([2-9][0-9]{2}[2-9][0-9]{6})$", re.ASCII)

#: KAZOO's ``get_classifier_regex`` default for object classifiers without a ``regex``.
_MISSING_CLASSIFIER_REGEX = "^$"

# --------------------------------------------------------------------------------------------
# Regex helpers
# --------------------------------------------------------------------------------------------


@lru_cache(maxsize=1024)
def _compile(pattern: str) -> re.Pattern[str]:
    """Compile a configured regex once; configs are re-read on every call."""
    return re.compile(pattern, re.ASCII)


_ConverterItems = tuple[tuple[str, str, str], ...]


@lru_cache(maxsize=64)
def _compiled_converters(items: _ConverterItems) -> tuple[tuple[re.Pattern[str], str, str], ...]:
    """Compile a converter table once per distinct content (order preserved)."""
    return tuple((_compile(regex), prefix, suffix) for regex, prefix, suffix in items)


def _converter_items(converters: Mapping[str, Mapping[str, str]]) -> _ConverterItems:
    """Hashable, ordered view of a converter table, used as the compile-cache key."""
    return tuple(
        (regex, str(spec.get("prefix", "") or ""), str(spec.get("suffix", "") or ""))
        for regex, spec in converters.items()
    )


def _last_capture(match: re.Match[str]) -> str:
    """PCRE/Erlang ``lists:last(Captures)``: the highest-numbered group that took part.

    Erlang's ``re:run(..., [{capture, all, binary}])`` drops trailing groups that did not
    participate, so for ``^011(\\d{5,})$|^00(\\d{5,})$`` matching ``00…`` the last capture is
    group 2, and matching ``011…`` it is group 1. With no participating group it is the whole
    match.
    """
    for index in range(match.re.groups, 0, -1):
        group = match.group(index)
        if group is not None:
            return group
    return match.group(0)


# --------------------------------------------------------------------------------------------
# Normalization and NANP conversions
# --------------------------------------------------------------------------------------------


def normalize(number: str, converters: Mapping[str, Mapping[str, str]] | None = None) -> str:
    """Convert a dialled/stored number to KAZOO's E.164 key form.

    Numbers starting with ``+`` are trusted as-is (KAZOO does no validation); otherwise
    the first matching converter regex wins and yields ``prefix + last capture + suffix``;
    unmatched numbers come back unchanged (so short extensions such as ``1000`` survive).
    ``converters=None`` uses the configured ``e164_converters``.
    """
    if number.startswith("+"):
        return number
    table = get_settings().e164_converters if converters is None else converters
    for pattern, prefix, suffix in _compiled_converters(_converter_items(table)):
        match = pattern.search(number)
        if match is not None:
            return f"{prefix}{_last_capture(match)}{suffix}"
    return number


def to_npan(number: str) -> str:
    """The 10-digit NANP form (``NPANXXXXXX``) of a NANP number, else the input unchanged."""
    match = _NPAN_RE.search(number)
    return number if match is None else match.group(2)


def to_1npan(number: str) -> str:
    """The 11-digit ``1NPANXXXXXX`` form of a NANP number, else the input unchanged."""
    match = _NPAN_RE.search(number)
    return number if match is None else "1" + match.group(2)


def to_strip_plus(number: str) -> str:
    """The normalized number without its leading ``+`` (carriers that want bare digits)."""
    normalized = normalize(number)
    return normalized.removeprefix("+")


def is_npan(number: str) -> bool:
    """True when ``number`` is already in NPAN form (conversion is the identity)."""
    return to_npan(number) == number


def is_1npan(number: str) -> bool:
    """True when ``number`` is already in 1NPAN form (conversion is the identity)."""
    return to_1npan(number) == number


def is_strip_plus(number: str) -> bool:
    """True when ``number`` is already in strip-plus form (conversion is the identity)."""
    return to_strip_plus(number) == number


def is_normalized(number: str) -> bool:
    """True when ``number`` is already normalized (normalization is the identity)."""
    return normalize(number) == number


def is_reconcilable(
    number: str,
    regex: str | None = None,
    converters: Mapping[str, Mapping[str, str]] | None = None,
) -> bool:
    """Whether knm manages this number at all: its normalized form matches ``reconcile_regex``.

    Bulk operations partition their inputs with this; the rest fail ``not_reconcilable``.
    Whatever the regex says, a number of more than ``MAX_E164_DIGITS`` digits (E.164's bound)
    is not one: such an input is refused before any regex reads it.
    """
    if len(number) > MAX_INPUT_CHARS:
        return False
    normalized = normalize(number, converters)
    if sum(c.isdigit() for c in normalized) > MAX_E164_DIGITS:
        return False
    pattern = get_settings().reconcile_regex if regex is None else regex
    return _compile(pattern).search(normalized) is not None


# --------------------------------------------------------------------------------------------
# Classification
# --------------------------------------------------------------------------------------------

ClassifierTable = Mapping[str, Mapping[str, object] | str]


def available_classifiers(
    classifiers: ClassifierTable | None = None,
) -> dict[str, dict[str, object]]:
    """The classifier table in object form, order preserved (first match wins downstream).

    Bare regex strings (deprecated config form) become ``{regex, friendly_name: <name>}``;
    objects lacking ``friendly_name`` get the classifier name. KAZOO sets that name on the
    accumulator instead — fixed here. Entries of any other type are ignored.
    """
    table = get_settings().classifiers if classifiers is None else classifiers
    result: dict[str, dict[str, object]] = {}
    for name, classifier in table.items():
        if isinstance(classifier, str):
            result[name] = {"regex": classifier, "friendly_name": name}
        elif isinstance(classifier, Mapping):
            entry = dict(classifier)
            entry.setdefault("friendly_name", name)
            result[name] = entry
    return result


def _classifier_regex(classifier: Mapping[str, object]) -> str:
    """A classifier's regex; KAZOO matches only the empty string when it has none."""
    regex = classifier.get("regex")
    return regex if isinstance(regex, str) and regex else _MISSING_CLASSIFIER_REGEX


def _first_match(
    normalized: str, classifiers: ClassifierTable | None
) -> tuple[str, dict[str, object]] | None:
    """The first classifier (in table order) whose regex matches a normalized number."""
    for name, classifier in available_classifiers(classifiers).items():
        if _compile(_classifier_regex(classifier)).search(normalized) is not None:
            return name, classifier
    return None


def classify(number: str, classifiers: ClassifierTable | None = None) -> str | None:
    """The classification (billing category, display format) of a number, or None.

    The number is normalized first; classifiers are tried in configuration order.
    """
    found = _first_match(normalize(number), classifiers)
    return None if found is None else found[0]


# --------------------------------------------------------------------------------------------
# Pretty printing (knm_util:pretty_print)
# --------------------------------------------------------------------------------------------


def _pretty_print_format(number: str, classifiers: ClassifierTable | None) -> str | None:
    """The display format KAZOO picks: the first matching classifier decides.

    A matching classifier without ``pretty_print`` does not fall through to later ones; the
    ``+1`` default (or no format) applies instead.
    """
    normalized = normalize(number)
    found = _first_match(normalized, classifiers)
    if found is not None:
        fmt = found[1].get("pretty_print")
        if isinstance(fmt, str):
            return fmt
    return NANP_PRETTY_PRINT if normalized.startswith("+1") else None


def _apply_format(fmt: str, number: str) -> str:
    """Walk ``fmt`` over ``number``: S skips, # emits one, * emits the rest, \\ escapes S#*.

    A backslash before any other character (or at the end) is an ordinary literal, as in
    KAZOO; literals keep being emitted after the number runs out.
    """
    out: list[str] = []
    rest = number
    i = 0
    while i < len(fmt):
        char = fmt[i]
        if char == "\\" and i + 1 < len(fmt) and fmt[i + 1] in "S#*":
            out.append(fmt[i + 1])
            i += 2
            continue
        if char == "S":
            rest = rest[1:]
        elif char == "#":
            out.append(rest[:1])
            rest = rest[1:]
        elif char == "*":
            out.append(rest)
            rest = ""
        else:
            out.append(char)
        i += 1
    return "".join(out)


def pretty_print(
    number: str | None,
    fmt: str | None = None,
    *,
    classifiers: ClassifierTable | None = None,
) -> str:
    """Human display of a number, per an explicit format or its classifier's format.

    The format walks the *normalized* number, leading ``+`` included (so ``SS`` drops ``+1``).
    Without a usable format the number is returned exactly as given; ``None`` is ``"unknown"``.
    """
    if number is None:
        return "unknown"
    if fmt is None:
        fmt = _pretty_print_format(number, classifiers)
        if fmt is None:
            return number
    return _apply_format(fmt, normalize(number))


# --------------------------------------------------------------------------------------------
# Countries (knm_iso3166_util, knm_iso3166a2_itu, knm_util:prefix_for_country)
# --------------------------------------------------------------------------------------------

#: ISO 3166-1 alpha-2 → alpha-3 (all 249 officially assigned codes). ``phonenumbers`` only knows
#: alpha-2 regions, and pycountry is not a dependency.
_A2_A3_PAIRS = """
AD:AND AE:ARE AF:AFG AG:ATG AI:AIA AL:ALB AM:ARM AO:AGO AQ:ATA AR:ARG AS:ASM AT:AUT AU:AUS
AW:ABW AX:ALA AZ:AZE BA:BIH BB:BRB BD:BGD BE:BEL BF:BFA BG:BGR BH:BHR BI:BDI BJ:BEN BL:BLM
BM:BMU BN:BRN BO:BOL BQ:BES BR:BRA BS:BHS BT:BTN BV:BVT BW:BWA BY:BLR BZ:BLZ CA:CAN CC:CCK
CD:COD CF:CAF CG:COG CH:CHE CI:CIV CK:COK CL:CHL CM:CMR CN:CHN CO:COL CR:CRI CU:CUB CV:CPV
CW:CUW CX:CXR CY:CYP CZ:CZE DE:DEU DJ:DJI DK:DNK DM:DMA DO:DOM DZ:DZA EC:ECU EE:EST EG:EGY
EH:ESH ER:ERI ES:ESP ET:ETH FI:FIN FJ:FJI FK:FLK FM:FSM FO:FRO FR:FRA GA:GAB GB:GBR GD:GRD
GE:GEO GF:GUF GG:GGY GH:GHA GI:GIB GL:GRL GM:GMB GN:GIN GP:GLP GQ:GNQ GR:GRC GS:SGS GT:GTM
GU:GUM GW:GNB GY:GUY HK:HKG HM:HMD HN:HND HR:HRV HT:HTI HU:HUN ID:IDN IE:IRL IL:ISR IM:IMN
IN:IND IO:IOT IQ:IRQ IR:IRN IS:ISL IT:ITA JE:JEY JM:JAM JO:JOR JP:JPN KE:KEN KG:KGZ KH:KHM
KI:KIR KM:COM KN:KNA KP:PRK KR:KOR KW:KWT KY:CYM KZ:KAZ LA:LAO LB:LBN LC:LCA LI:LIE LK:LKA
LR:LBR LS:LSO LT:LTU LU:LUX LV:LVA LY:LBY MA:MAR MC:MCO MD:MDA ME:MNE MF:MAF MG:MDG MH:MHL
MK:MKD ML:MLI MM:MMR MN:MNG MO:MAC MP:MNP MQ:MTQ MR:MRT MS:MSR MT:MLT MU:MUS MV:MDV MW:MWI
MX:MEX MY:MYS MZ:MOZ NA:NAM NC:NCL NE:NER NF:NFK NG:NGA NI:NIC NL:NLD NO:NOR NP:NPL NR:NRU
NU:NIU NZ:NZL OM:OMN PA:PAN PE:PER PF:PYF PG:PNG PH:PHL PK:PAK PL:POL PM:SPM PN:PCN PR:PRI
PS:PSE PT:PRT PW:PLW PY:PRY QA:QAT RE:REU RO:ROU RS:SRB RU:RUS RW:RWA SA:SAU SB:SLB SC:SYC
SD:SDN SE:SWE SG:SGP SH:SHN SI:SVN SJ:SJM SK:SVK SL:SLE SM:SMR SN:SEN SO:SOM SR:SUR SS:SSD
ST:STP SV:SLV SX:SXM SY:SYR SZ:SWZ TC:TCA TD:TCD TF:ATF TG:TGO TH:THA TJ:TJK TK:TKL TL:TLS
TM:TKM TN:TUN TO:TON TR:TUR TT:TTO TV:TUV TW:TWN TZ:TZA UA:UKR UG:UGA UM:UMI US:USA UY:URY
UZ:UZB VA:VAT VC:VCT VE:VEN VG:VGB VI:VIR VN:VNM VU:VUT WF:WLF WS:WSM YE:YEM YT:MYT ZA:ZAF
ZM:ZMB ZW:ZWE
"""

_A2_TO_A3: dict[str, str] = {pair[:2]: pair[3:] for pair in _A2_A3_PAIRS.split()}
_A3_TO_A2: dict[str, str] = {a3: a2 for a2, a3 in _A2_TO_A3.items()}

#: ISO countries with no ``phonenumbers`` region, dialled via another country's code.
_EXTRA_ITU: dict[str, int] = {
    "AQ": 672,  # Antarctica (Australian Antarctic Territory / Norfolk range)
    "BV": 47,  # Bouvet Island (Norway)
    "GS": 500,  # South Georgia (Falklands numbering)
    "HM": 672,  # Heard & McDonald Islands (Australian external territories)
    "PN": 64,  # Pitcairn (New Zealand numbering)
    "TF": 262,  # French Southern Territories (Réunion numbering)
    "UM": 1,  # US Minor Outlying Islands (NANP)
}

_FALLBACK_PREFIX = "+1"


def iso3166_alpha2(alpha3: str) -> str:
    """ISO 3166-1 alpha-3 → alpha-2 (``USA`` → ``US``); unknown codes raise ``ValueError``."""
    try:
        return _A3_TO_A2[alpha3.strip().upper()]
    except KeyError:
        raise ValueError(f"unknown ISO 3166-1 alpha-3 code: {alpha3!r}") from None


def iso3166_alpha3(alpha2: str) -> str:
    """ISO 3166-1 alpha-2 → alpha-3 (``FO`` → ``FRO``); unknown codes raise ``ValueError``."""
    try:
        return _A2_TO_A3[alpha2.strip().upper()]
    except KeyError:
        raise ValueError(f"unknown ISO 3166-1 alpha-2 code: {alpha2!r}") from None


def to_itu(alpha2: str) -> str:
    """The ITU dialling prefix of a country (``US`` → ``+1``, ``FR`` → ``+33``).

    Unknown regions raise ``ValueError`` (KAZOO's table has no catch-all clause either).
    """
    region = alpha2.strip().upper()
    code = phonenumbers.country_code_for_region(region) or _EXTRA_ITU.get(region, 0)
    if not code:
        raise ValueError(f"no ITU calling code for region {alpha2!r}")
    return f"+{code}"


def prefix_for_country(country: str | None) -> str:
    """The dial prefix number searches use for ``country`` (alpha-2, or alpha-3 tolerated).

    Missing or unknown countries fall back to the configured ``default_country`` (``US``) so a
    search never fails just because the country was bad, as KAZOO's callers assume.
    """
    for candidate in (country, get_settings().default_country):
        if not candidate:
            continue
        code = candidate.strip().upper()
        if len(code) == 3 and code in _A3_TO_A2:
            code = _A3_TO_A2[code]
        try:
            return to_itu(code)
        except ValueError:
            continue
    return _FALLBACK_PREFIX


def is_valid_e164(number: str) -> bool:
    """Stricter check than ``normalize``: ``+`` followed by a number plausible for its country.

    For callers that want to reject junk (``normalize`` accepts anything starting with ``+``).
    """
    if not number.startswith("+"):
        return False
    try:
        parsed = phonenumbers.parse(number, None)
    except phonenumbers.NumberParseException:
        return False
    return bool(phonenumbers.is_possible_number(parsed))
