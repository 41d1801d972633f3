"""The HTTP API's ASGI app: ``create_app()`` and ``serve()`` (``knm api serve``).

The app is one more producer: writes are published as the same tasks other services send and
the answer is the worker's result; reads go straight to the store. Every answer is in KAZOO's
crossbar envelope (``knm.api.envelope``), whatever went wrong: a bad token, a route that does not
exist, a malformed or oversized body, a client that stops sending, a broker that is down.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any, Final

import anyio.to_thread
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from config.settings import Settings, get_settings
from knm.api import envelope, phone_numbers, tasks
from knm.api.context import ApiContext
from knm.api.envelope import ApiError, EnvelopeResponse
from knm.domain.errors import KnmError

log = logging.getLogger(__name__)

#: Routes that take a CSV body (its own size limit): ``PUT /v2/accounts/{A}/tasks``.
_CSV_TYPES: Final[tuple[bytes, ...]] = (b"text/csv",)
#: Bodies without a JSON type that are read as JSON all the same.
_FORM_TYPES: Final[tuple[bytes, ...]] = (b"", b"application/x-www-form-urlencoded")


class BodyTooLargeError(Exception):
    def __init__(self, limit: int) -> None:
        super().__init__(f"the body is larger than {limit} bytes")
        self.limit = limit


class BodyTimeoutError(Exception):
    def __init__(self, seconds: float) -> None:
        super().__init__(f"no byte of the body came for {seconds:g} s")
        self.seconds = seconds


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return bytes(value)
    return None


class Guard:
    """Request id, body size limit and body timeout, before any route runs (pure ASGI).

    ``X-Request-Id`` is honoured (it is a write's idempotency key) or generated, and returned on
    every answer. A body larger than its limit is refused with 413 before it is read when its
    ``Content-Length`` says so, else as soon as it passes the limit; a client that sends nothing
    for ``api_body_timeout_s`` gets 408. Both raise inside the route's read of the body, so a
    CSV upload in progress is discarded like any failed one.
    """

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = _header(scope, b"x-request-id")
        request_id = given.decode("latin-1").strip() if given else envelope.new_request_id()
        if given is not None and not envelope.valid_request_id(request_id):
            bad = envelope.invalid_field(
                "X-Request-Id",
                "pattern",
                "X-Request-Id must be 1 to 128 letters, digits or ._:- characters",
            )
            await _send_error(scope, send, bad, envelope.new_request_id())
            return
        scope.setdefault("state", {})["request_id"] = request_id
        content_type = (_header(scope, b"content-type") or b"").split(b";")[0].strip().lower()
        if content_type in _FORM_TYPES:
            # crossbar reads every body as JSON: so does this API (curl -d sends a form type)
            headers = [(k, v) for k, v in scope.get("headers", ()) if k != b"content-type"]
            scope = {**scope, "headers": [*headers, (b"content-type", b"application/json")]}
        limit = (
            self.settings.api_max_csv_bytes
            if content_type in _CSV_TYPES
            else self.settings.api_max_body_bytes
        )
        length = _header(scope, b"content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            await _send_error(scope, send, _too_large(limit), request_id)
            return
        received = 0
        body_done = False
        timeout = self.settings.api_body_timeout_s

        async def guarded_receive() -> Message:
            nonlocal received, body_done
            if body_done:  # past the body only a disconnect comes: no limit, no timeout
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), timeout)
            except TimeoutError:
                raise BodyTimeoutError(timeout) from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLargeError(limit)
                body_done = not message.get("more_body", False)
            return message

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                if not any(k.lower() == b"x-request-id" for k, _ in headers):
                    headers.append((b"x-request-id", request_id.encode("latin-1")))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, guarded_receive, send_with_id)


def _too_large(limit: int) -> ApiError:
    return ApiError(
        413,
        "payload_too_large",
        {"message": f"the request body is larger than the {limit} bytes allowed", "limit": limit},
    )


async def _send_error(scope: Scope, send: Send, exc: ApiError, request_id: str) -> None:
    response = envelope.error(exc.status, exc.message, exc.data, request_id)
    await response(scope, _no_body, send)


async def _no_body() -> Message:
    return {"type": "http.request", "body": b"", "more_body": False}


def request_id_of(request: Request) -> str:
    value = request.scope.get("state", {}).get("request_id")
    return value if isinstance(value, str) else envelope.new_request_id()


# ================================================================================ handlers
def _api_error(request: Request, exc: Exception) -> EnvelopeResponse:
    assert isinstance(exc, ApiError)
    return envelope.error(exc.status, exc.message, exc.data, request_id_of(request))


def _knm_error(request: Request, exc: Exception) -> EnvelopeResponse:
    assert isinstance(exc, KnmError)
    return _api_error(request, envelope.knm_error(exc))


def _validation_error(request: Request, exc: Exception) -> EnvelopeResponse:
    assert isinstance(exc, RequestValidationError)
    errors = list(exc.errors())
    if any(err.get("type") == "json_invalid" for err in errors):
        detail = next(err for err in errors if err.get("type") == "json_invalid")
        ctx = detail.get("ctx") or {}
        data = {"message": f"the body is not valid JSON: {ctx.get('error', 'malformed')}"}
        return envelope.error(400, "invalid json", data, request_id_of(request))
    fields = envelope.validation_fields(errors)
    return envelope.error(400, "invalid data", fields, request_id_of(request))


def _http_error(request: Request, exc: Exception) -> EnvelopeResponse:
    assert isinstance(exc, StarletteHTTPException)
    cause = exc.__cause__  # FastAPI wraps a failure to read the body in a 400
    if isinstance(cause, BodyTooLargeError):
        return _body_too_large(request, cause)
    if isinstance(cause, BodyTimeoutError):
        return _body_timeout(request, cause)
    route = f"{request.method} {request.url.path}"
    headers = {k.lower(): v for k, v in (exc.headers or {}).items()}
    if exc.status_code == 404:
        data: dict[str, Any] = {"message": f"no such route: {route}"}
        return envelope.error(404, "not_found", data, request_id_of(request), headers)
    if exc.status_code == 405:
        data = {"message": f"method not allowed: {route}", "allowed": headers.get("allow", "")}
        return envelope.error(405, "method_not_allowed", data, request_id_of(request), headers)
    data = {"message": str(exc.detail)}
    name = str(exc.detail).lower().replace(" ", "_")
    return envelope.error(exc.status_code, name, data, request_id_of(request), headers)


def _body_too_large(request: Request, exc: Exception) -> EnvelopeResponse:
    assert isinstance(exc, BodyTooLargeError)
    return _api_error(request, _too_large(exc.limit))


def _body_timeout(request: Request, exc: Exception) -> EnvelopeResponse:
    assert isinstance(exc, BodyTimeoutError)
    data = {"message": str(exc)}
    return envelope.error(408, "request_timeout", data, request_id_of(request))


def _unexpected(request: Request, exc: Exception) -> EnvelopeResponse:
    """The last resort: one line in the log, KAZOO's 500 to the client, the server goes on."""
    log.exception("unexpected failure of %s %s", request.method, request.url.path)
    data = {"message": f"{type(exc).__name__}: internal error"}
    return envelope.error(500, "internal_error", data, request_id_of(request))


# ================================================================================ the app
def create_app(settings: Settings | None = None, context: ApiContext | None = None) -> FastAPI:
    """The API: routes, envelope handlers and the guard, on ``context`` (opened at start-up
    from ``settings`` when not given)."""
    settings = settings or get_settings()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # routes run in threads; a write holds one while it waits for its worker
        anyio.to_thread.current_default_thread_limiter().total_tokens = settings.api_threads
        if context is not None:
            app.state.ctx = context
            yield
            return
        ctx = await asyncio.to_thread(ApiContext.open, settings)
        app.state.ctx = ctx
        try:
            yield
        finally:
            ctx.close()

    app = FastAPI(
        title="knm HTTP API",
        description="KAZOO-compatible phone_numbers and tasks APIs (crossbar envelope).",
        version="2",
        lifespan=lifespan,
        default_response_class=EnvelopeResponse,
    )
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(KnmError, _knm_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(BodyTooLargeError, _body_too_large)
    app.add_exception_handler(BodyTimeoutError, _body_timeout)
    app.add_exception_handler(Exception, _unexpected)

    @app.get("/v2/health", tags=["health"])
    def health(request: Request) -> EnvelopeResponse:
        """Unauthenticated liveness: the process answers (the compose health check)."""
        return envelope.success({"ok": True}, request_id_of(request))

    app.include_router(phone_numbers.router)
    app.include_router(tasks.router)
    app.add_middleware(Guard, settings=settings)
    return app


def serve(host: str, port: int, settings: Settings | None = None) -> None:
    """Run the API with uvicorn until interrupted."""
    import uvicorn

    settings = settings or get_settings()
    uvicorn.run(
        create_app(settings),
        host=host,
        port=port,
        log_level="info",
        timeout_keep_alive=5,
        access_log=False,
    )
