"""Placeholder: fake bandwidth2 API (to be written)."""

from __future__ import annotations

from typing import ClassVar

from carriers.sandbox.core import FakeProvider, Request, Response, SandboxState


class FakeBandwidth2(FakeProvider):
    name: ClassVar[str] = "bandwidth2"

    def env(self, base_url: str) -> dict[str, str]:
        return {}

    def endpoint(self, req: Request) -> str:
        return "unknown"

    def handle(self, req: Request, state: SandboxState) -> Response:
        return Response(501, b"{}")
