"""The layer rules as data: which package sits in which layer and what each layer may import.

Kept apart from the checker so the rules read as a table and change in one place.
"""

from __future__ import annotations

from typing import Final

# The project's top-level packages; any other import is the standard library or a dependency.
PROJECT_ROOTS: Final = ("knm", "carriers", "tasks", "workers", "config")

# Whole module names placed on their own: the `knm` package's `__init__`, and `knm.__main__`,
# an entry point like the CLI it starts. Any other top-level `knm` module is placed nowhere.
LAYER_OF_MODULE: Final[dict[str, str]] = {"knm": "knm", "knm.__main__": "knm.cli"}

# Package -> layer, for the package and everything under it (the longest match wins).
LAYER_OF_PREFIX: Final[dict[str, str]] = {
    "knm.cli": "knm.cli",
    "knm.api": "knm.api",
    "knm.tools": "knm.tools",
    "tasks": "tasks",
    "workers": "workers",
    "knm.services": "knm.services",
    "knm.contract": "knm.contract",
    "knm.store": "knm.store",
    "carriers": "carriers",
    "knm.domain": "knm.domain",
    "config": "config",
}

_BELOW_SERVICES: Final = ("knm.store", "carriers", "knm.domain", "config")
_SERVICES: Final = ("knm.services", "knm.contract", *_BELOW_SERVICES)

# Layer -> the other layers it may import (its own layer is always allowed). Imports point
# down only; tasks may import workers, never the other way round.
ALLOWED_IMPORTS: Final[dict[str, tuple[str, ...]]] = {
    "knm.cli": ("knm.api", "tasks", "workers", *_SERVICES),
    "knm.api": ("tasks", "workers", *_SERVICES),
    "tasks": ("workers", *_SERVICES),
    "workers": _SERVICES,
    "knm.services": ("knm.contract", *_BELOW_SERVICES),
    "knm.contract": ("knm.services", *_BELOW_SERVICES),
    "knm.store": ("knm.domain", "config"),
    "carriers": ("knm.domain", "config"),
    "knm.domain": ("config",),
    "config": (),
    "knm": (),
    "knm.tools": (),
}

# The message-broker libraries and the only layers that may import them.
CELERY_PACKAGES: Final = ("celery", "kombu", "billiard")
CELERY_LAYERS: Final = ("tasks", "workers", "config", "knm.cli")

MAX_MODULE_LINES: Final = 600
MAX_KNM_TOP_LEVEL: Final = 12


def layer_of(module: str) -> str | None:
    """The layer of a dotted module name, or None when no rule places it."""
    if module in LAYER_OF_MODULE:
        return LAYER_OF_MODULE[module]
    parts = module.split(".")
    for end in range(len(parts), 0, -1):
        layer = LAYER_OF_PREFIX.get(".".join(parts[:end]))
        if layer is not None:
            return layer
    return None


def may_import(importer_layer: str, imported_layer: str) -> bool:
    """Whether a module of one layer may import a module of the other."""
    if importer_layer == imported_layer:
        return True
    return imported_layer in ALLOWED_IMPORTS.get(importer_layer, ())


def may_import_celery(layer: str) -> bool:
    """Whether a module of this layer may import Celery, kombu or billiard."""
    return layer in CELERY_LAYERS
