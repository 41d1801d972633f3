"""The sandbox: a real HTTP server that speaks each provider's API (``knm sandbox serve``).

One server, one path prefix per provider (``/telnyx/...``, ``/vitelity/...``, ...), plus a control
API under ``/_sandbox/``: ``GET stats`` (requests, purchases, releases, owned numbers),
``POST config`` (random injection: latency, error rate, timeouts, a forced status),
``POST faults`` (scripted failures, e.g. "the next order answers 503") and ``POST reset``.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterable
from dataclasses import asdict, fields
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx

from carriers.sandbox.core import FakeProvider, Fault, Injection, Request, Response, SandboxState

log = logging.getLogger(__name__)


def default_providers() -> list[FakeProvider]:
    """Every fake provider this build ships."""
    from carriers.sandbox.bandwidth import FakeBandwidth
    from carriers.sandbox.bandwidth2 import FakeBandwidth2
    from carriers.sandbox.other import FakeOther
    from carriers.sandbox.telnyx import FakeTelnyx
    from carriers.sandbox.vitelity import FakeVitelity
    from carriers.sandbox.voip_innovations import FakeVoipInnovations

    return [
        FakeTelnyx(),
        FakeVitelity(),
        FakeVoipInnovations(),
        FakeBandwidth(),
        FakeBandwidth2(),
        FakeOther(),
    ]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        """The access log, without query strings (Vitelity's credentials travel there)."""
        if log.isEnabledFor(logging.DEBUG):
            log.debug("sandbox: %s %s", self.command, urlsplit(self.path).path)

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def do_PUT(self) -> None:
        self._serve()

    def do_DELETE(self) -> None:
        self._serve()

    def _serve(self) -> None:
        parts = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        segments = parts.path.lstrip("/").split("/", 1)
        head, rest = segments[0], "/" + (segments[1] if len(segments) > 1 else "")
        req = Request(
            method=self.command,
            path=rest,
            query=dict(parse_qsl(parts.query, keep_blank_values=True)),
            headers={k.lower(): v for k, v in self.headers.items()},
            body=body,
        )
        sandbox = self.server.sandbox
        if head == "_sandbox":
            self._send(sandbox.control(req))
            return
        provider = sandbox.providers.get(head)
        if provider is None:
            self._send(Response(404, b'{"message": "no such provider"}'))
            return
        answer = sandbox.serve(provider, req)
        if answer is None:  # "drop": close without answering
            self.close_connection = True
            return
        self._send(answer)

    def _send(self, answer: Response) -> None:
        try:
            self.send_response(answer.status)
            self.send_header("Content-Type", answer.content_type)
            self.send_header("Content-Length", str(len(answer.body)))
            for name, value in answer.headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(answer.body)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client gave up (its timeout): nothing to do


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    sandbox: Sandbox


def sandbox_env(url: str, providers: Iterable[FakeProvider] | None = None) -> dict[str, str]:
    """The environment that points knm at a sandbox serving on ``url`` (every integration);
    nothing is bound, so it can be printed for a sandbox that already runs."""
    named = {p.name: p for p in (providers or default_providers())}
    out: dict[str, str] = {}
    for name, provider in named.items():
        out.update(provider.env(f"{url}/{name}"))
    out["KNM_CARRIER_MODULES"] = ",".join(
        ["knm_local", *(f"knm_{n}" for n in named if n != "bandwidth")]
    )
    return out


class Sandbox:
    """The fake providers behind one HTTP server, on loopback by default."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        providers: Iterable[FakeProvider] | None = None,
        injection: Injection | None = None,
        stock_size: int = 40,
    ) -> None:
        self.providers = {p.name: p for p in (providers or default_providers())}
        self.state = SandboxState(stock_size)
        self.state.reset(injection)
        self._server = _Server((host, port), _Handler)
        self._server.sandbox = self
        self._thread: threading.Thread | None = None
        self._serving = False

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def env(self) -> dict[str, str]:
        """The environment that points knm at this sandbox (every integration)."""
        return sandbox_env(self.url, self.providers.values())

    # --------------------------------------------------------------------------- lifecycle
    def start(self) -> Sandbox:
        self._serving = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="knm-sandbox", daemon=True
        )
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self._serving = True
        try:
            self._server.serve_forever()
        finally:
            self._serving = False

    def stop(self) -> None:
        if self._serving:
            self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> Sandbox:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --------------------------------------------------------------------------- requests
    def serve(self, provider: FakeProvider, req: Request) -> Response | None:
        """Answer one provider request, applying latency and faults."""
        self.state.entering(provider.name)
        try:
            return self._serve(provider, req)
        finally:
            self.state.leaving(provider.name)

    def _serve(self, provider: FakeProvider, req: Request) -> Response | None:
        endpoint = provider.endpoint(req)
        self.state.record(provider.name, endpoint, req)
        latency = self.state.injection.latency_ms
        if latency > 0:
            time.sleep(latency / 1000)
        fault = self.state.take_fault(provider.name, endpoint, req)
        if fault is not None and fault.kind == "status":
            headers = {}
            if fault.retry_after is not None:
                headers["Retry-After"] = str(int(fault.retry_after))
            body = json.dumps({"message": f"sandbox: injected HTTP {fault.status}"}).encode()
            return Response(fault.status, body, "application/json", headers)
        if fault is not None and fault.kind == "stall_before":
            time.sleep(fault.stall_s)
            return Response(504, b'{"message": "sandbox: stalled"}')
        answer = provider.handle(req, self.state)
        if fault is None:
            return answer
        if fault.kind == "stall_after":
            time.sleep(fault.stall_s)
            return answer
        if fault.kind == "malformed":
            return provider.malformed()
        return None  # drop

    def control(self, req: Request) -> Response:
        action = req.path.strip("/")
        try:
            payload = json.loads(req.body or b"{}")
        except ValueError:
            return Response(400, b'{"message": "body must be JSON"}')
        if action == "stats" and req.method == "GET":
            return _json(self.state.stats())
        if action == "reset" and req.method == "POST":
            self.state.reset(_injection(payload) if payload else None)
            return _json(self.state.stats())
        if action == "config" and req.method == "POST":
            with self.state.lock:
                current = asdict(self.state.injection)
                current.update(payload)
                self.state.injection = _injection(current)
            return _json(asdict(self.state.injection))
        if action == "faults" and req.method == "POST":
            items = payload if isinstance(payload, list) else [payload]
            with self.state.lock:
                self.state.faults.extend(Fault(**item) for item in items)
            return _json({"faults": len(self.state.faults)})
        if action == "calls" and req.method == "GET":
            with self.state.lock:
                return _json(list(self.state.calls))
        return Response(404, b'{"message": "unknown sandbox control"}')


def _injection(values: dict[str, Any]) -> Injection:
    known = {f.name for f in fields(Injection)}
    return Injection(**{k: v for k, v in values.items() if k in known})


def _json(value: Any) -> Response:
    return Response(200, json.dumps(value, default=str).encode(), "application/json")


class SandboxClient:
    """Drives a running sandbox's control API (tests, benchmarks, the demo)."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")
        self.http = httpx.Client(timeout=10)

    def stats(self) -> dict[str, Any]:
        return dict(self.http.get(f"{self.url}/_sandbox/stats").json())

    def calls(self) -> list[dict[str, Any]]:
        return list(self.http.get(f"{self.url}/_sandbox/calls").json())

    def reset(self, **injection: Any) -> None:
        self.http.post(f"{self.url}/_sandbox/reset", json=injection).raise_for_status()

    def configure(self, **injection: Any) -> None:
        self.http.post(f"{self.url}/_sandbox/config", json=injection).raise_for_status()

    def fault(self, kind: str, **spec: Any) -> None:
        self.http.post(
            f"{self.url}/_sandbox/faults", json={"kind": kind, **spec}
        ).raise_for_status()

    def purchases(self, provider: str) -> dict[str, int]:
        return dict(self.stats()["purchases"].get(provider, {}))

    def requests(self, provider: str) -> dict[str, int]:
        return dict(self.stats()["requests"].get(provider, {}))

    def close(self) -> None:
        self.http.close()
