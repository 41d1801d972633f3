"""Fake providers over real HTTP: ``knm sandbox serve``, the tests and the demo use them."""

from carriers.sandbox.core import Fault, Injection
from carriers.sandbox.server import Sandbox, SandboxClient

__all__ = ["Fault", "Injection", "Sandbox", "SandboxClient"]
