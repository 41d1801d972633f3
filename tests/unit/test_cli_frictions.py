"""Small frictions of the command line, without a store: ``-h``, ``--version``, flags shown as
flags in every command's help, and no "No hostname was supplied" from the embedded broker."""

from __future__ import annotations

import logging
from importlib import metadata

import pytest
import typer
from kombu import Connection
from typer._click import Command
from typer.testing import CliRunner

from knm.cli.root import cli, version
from workers import filesystem_transport


def _commands(command: Command, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command path of the tree under ``command``."""
    found = [path]
    for name, sub in getattr(command, "commands", {}).items():  # a group's commands
        found += _commands(sub, (*path, name))
    return found


ALL = _commands(typer.main.get_command(cli))


def test_dash_h_is_help() -> None:
    result = CliRunner().invoke(cli, ["-h"])
    assert result.exit_code == 0, result.output
    assert "Usage: knm" in result.output
    numbers = CliRunner().invoke(cli, ["numbers", "create", "-h"])
    assert numbers.exit_code == 0
    assert "--account" in numbers.output


def test_version() -> None:
    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0
    assert result.output == f"knm {metadata.version('knm')}\n"
    assert version() == metadata.version("knm")


@pytest.mark.parametrize("path", ALL, ids=lambda p: " ".join(p) or "knm")
def test_flags_are_shown_as_flags(path: tuple[str, ...]) -> None:
    result = CliRunner().invoke(cli, [*path, "--help"], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "<bool>" not in result.output
    assert "-h" in result.output


def test_every_command_is_covered() -> None:
    assert {p[0] for p in ALL if p} >= {"numbers", "jobs", "sweep", "worker", "stop", "demo"}


def test_the_embedded_broker_needs_no_hostname(caplog: pytest.LogCaptureFixture) -> None:
    filesystem_transport.register()
    caplog.set_level(logging.WARNING, logger="kombu.connection")
    with Connection("knmfs://") as connection:
        info = dict(connection._info())
    assert info["hostname"] is None
    assert "No hostname was supplied" not in caplog.text
