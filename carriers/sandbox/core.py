"""The sandbox's shared parts: requests, answers, fault injection, the fake providers' state.

Every fake provider sees the same ``SandboxState``: which numbers the (single) sandbox account
owns per provider, its orders, and counters of requests and effects, so a test can assert "one
purchase" by reading ``purchases`` rather than trusting knm's own account of it.
"""

from __future__ import annotations

import random
import re
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar, Literal

FaultKind = Literal["status", "stall_before", "stall_after", "malformed", "drop"]

#: The credentials every fake provider accepts (``knm sandbox serve`` prints them).
SANDBOX_USER = "sandbox"
SANDBOX_SECRET = "sandbox-secret"  # noqa: S105  (a fake provider's fixed test credential)


@dataclass
class Request:
    """One HTTP request as a fake provider sees it (``path`` without the provider prefix)."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


@dataclass
class Response:
    status: int = 200
    body: bytes = b""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Fault:
    """A scripted failure: the next ``times`` requests matching ``provider``/``match`` get it.

    ``status``: answer ``status`` without processing (``retry_after`` sets the header);
    ``stall_before``: wait ``stall_s`` then answer without processing (a client timeout with
    no effect); ``stall_after``: process, then wait ``stall_s`` before answering (a client
    timeout after the effect: the ambiguous case); ``malformed``: process, answer garbage;
    ``drop``: process, then close the connection without an answer. ``match`` is a substring
    of the endpoint name or the path; ``method`` narrows it to one HTTP method.
    """

    kind: FaultKind
    provider: str | None = None
    match: str | None = None
    status: int = 503
    times: int | None = 1
    retry_after: float | None = None
    stall_s: float = 5.0
    method: str | None = None

    def matches(self, provider: str, endpoint: str, req: Request) -> bool:
        if self.provider is not None and self.provider != provider:
            return False
        if self.method is not None and self.method.upper() != req.method:
            return False
        return self.match is None or self.match in endpoint or self.match in req.path


@dataclass
class Injection:
    """Faults at random, for benchmarks and demonstrations (``knm sandbox serve`` flags)."""

    latency_ms: float = 0.0
    error_rate: float = 0.0
    error_status: int = 503
    timeout_rate: float = 0.0
    stall_s: float = 5.0
    status: int | None = None
    seed: int = 7


class SandboxState:
    """What the fake providers remember; every access holds ``lock``."""

    def __init__(self, stock_size: int = 40) -> None:
        self.lock = threading.RLock()
        self.stock_size = stock_size
        self.reset()

    def reset(self, injection: Injection | None = None) -> None:
        with self.lock:
            self.owned: dict[str, dict[str, dict[str, Any]]] = {}
            self.orders: dict[str, dict[str, dict[str, Any]]] = {}
            self.requests: Counter[tuple[str, str]] = Counter()
            self.purchases: Counter[tuple[str, str]] = Counter()
            self.releases: Counter[tuple[str, str]] = Counter()
            self.calls: list[dict[str, Any]] = []
            self.in_flight: Counter[str] = Counter()
            self.peak_in_flight: Counter[str] = Counter()
            self.faults: list[Fault] = []
            self.injection = injection or Injection()
            self.rng = random.Random(self.injection.seed)  # noqa: S311  (fault injection)
            self.sequence = 0

    # ------------------------------------------------------------------ provider-facing helpers
    def owned_by(self, provider: str) -> dict[str, dict[str, Any]]:
        with self.lock:
            return self.owned.setdefault(provider, {})

    def is_owned(self, provider: str, number: str) -> bool:
        with self.lock:
            return number in self.owned.get(provider, {})

    def buy(self, provider: str, number: str, info: dict[str, Any] | None = None) -> bool:
        """Take ``number`` for the sandbox account; False when it is already owned."""
        with self.lock:
            owned = self.owned.setdefault(provider, {})
            if number in owned:
                return False
            owned[number] = dict(info or {})
            self.purchases[(provider, number)] += 1
            return True

    def release(self, provider: str, number: str) -> bool:
        with self.lock:
            owned = self.owned.setdefault(provider, {})
            if number not in owned:
                return False
            del owned[number]
            self.releases[(provider, number)] += 1
            return True

    def entering(self, provider: str) -> None:
        """A request is being answered (for the peak concurrency a benchmark reads)."""
        with self.lock:
            self.in_flight[provider] += 1
            self.peak_in_flight[provider] = max(
                self.peak_in_flight[provider], self.in_flight[provider]
            )

    def leaving(self, provider: str) -> None:
        with self.lock:
            self.in_flight[provider] -= 1

    def next_id(self) -> int:
        with self.lock:
            self.sequence += 1
            return self.sequence

    def record(self, provider: str, endpoint: str, req: Request) -> None:
        """Count a request (and keep the last few hundred for tests to inspect)."""
        with self.lock:
            self.requests[(provider, endpoint)] += 1
            self.calls.append(
                {
                    "provider": provider,
                    "endpoint": endpoint,
                    "method": req.method,
                    "path": req.path,
                    "query": {k: v for k, v in req.query.items() if k not in SECRET_PARAMS},
                    "body": _mask(req.body.decode("utf-8", "replace")[:4000]),
                    "at": time.time(),
                }
            )
            del self.calls[:-500]

    def take_fault(self, provider: str, endpoint: str, req: Request) -> Fault | None:
        """The scripted fault for this request, else one drawn from the random injection."""
        with self.lock:
            for fault in self.faults:
                if fault.matches(provider, endpoint, req) and (
                    fault.times is None or fault.times > 0
                ):
                    if fault.times is not None:
                        fault.times -= 1
                    return fault
            inj = self.injection
            if inj.status is not None:
                return Fault("status", status=inj.status, times=None)
            draw = self.rng.random()
            if draw < inj.error_rate:
                return Fault("status", status=inj.error_status, retry_after=0)
            if draw < inj.error_rate + inj.timeout_rate:
                return Fault("stall_after", stall_s=inj.stall_s)
            return None

    def stats(self) -> dict[str, Any]:
        with self.lock:
            return {
                "requests": _nest(self.requests),
                "purchases": _nest(self.purchases),
                "releases": _nest(self.releases),
                "owned": {p: sorted(numbers) for p, numbers in self.owned.items()},
                "peak_in_flight": dict(self.peak_in_flight),
                "injection": asdict(self.injection),
                "faults_left": [asdict(f) for f in self.faults if f.times is None or f.times > 0],
            }


#: Query parameters never echoed back by the sandbox's call log.
SECRET_PARAMS = frozenset({"pass", "login", "password", "secret"})
#: Credential elements of XML bodies (SOAP ``tns:secret``, Bandwidth's ``developerKey``).
_SECRET_ELEMENTS = re.compile(
    r"(<(?:\w+:)?(?:secret|password|login|developerKey)>)[^<]*(</)", re.IGNORECASE
)


def _mask(body: str) -> str:
    """A request body for the call log, with credentials masked."""
    return _SECRET_ELEMENTS.sub(r"\1***\2", body)


def _nest(counter: Counter[tuple[str, str]]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for (a, b), n in sorted(counter.items()):
        out.setdefault(a, {})[b] = n
    return out


class FakeProvider:
    """One provider's API: ``endpoint`` names a request for counting and faults, ``handle``
    answers it, ``malformed`` is what a garbled answer looks like, ``env`` points knm at it."""

    name: ClassVar[str]

    def endpoint(self, req: Request) -> str:
        raise NotImplementedError

    def handle(self, req: Request, state: SandboxState) -> Response:
        raise NotImplementedError

    def malformed(self) -> Response:
        return Response(200, b'{"result": [', "application/json")

    def env(self, base_url: str) -> dict[str, str]:
        raise NotImplementedError


# ================================================================================ stock
def nanp_stock(prefix_digits: str, size: int) -> list[str]:
    """Deterministic available 10-digit NANP numbers starting with ``prefix_digits``.

    NPA only: numbers spread over several exchanges; NPA-NXX (or longer): one exchange, then
    filtered by the whole prefix. Shorter or non-NANP prefixes have no stock.
    """
    digits = prefix_digits
    if len(digits) < 3 or not digits.isdigit() or digits[0] in "01":
        return []
    npa = digits[:3]
    out: list[str] = []
    for k in range(size * 4):
        line = f"{(1000 + 7919 * k) % 10000:04d}"
        nxx = digits[3:6] if len(digits) >= 6 else str(200 + (k * 13) % 800)
        number = f"{npa}{nxx}{line}"
        if number.startswith(digits) and number not in out:
            out.append(number)
        if len(out) >= size:
            break
    return out


def available(state: SandboxState, provider: str, prefix_digits: str, size: int) -> list[str]:
    """Stock for ``prefix_digits`` that the sandbox account does not own (10 digits each)."""
    owned = state.owned_by(provider)
    return [n for n in nanp_stock(prefix_digits, size) if "+1" + n not in owned]


def orderable(number: str) -> bool:
    """Any valid NANP number can be ordered from the sandbox (unless someone owns it)."""
    digits = number.removeprefix("+1")
    return (
        len(digits) == 10 and digits.isdigit() and digits[0] not in "01" and digits[3] not in "01"
    )
