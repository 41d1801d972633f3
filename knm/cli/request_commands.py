"""``knm requests show REQUEST_ID`` and ``knm requests retry REQUEST_ID``.

``show`` prints what knm recorded about a request sent through the broker: its status
(``done``, ``dead_letter``: retries used up, ``in_progress``), merged result, outcome events,
dead letters and the provider calls of the provisioning ledger. ``retry`` sends a request's
dead-lettered shares again under the same request id (so nothing done is redone). Exit codes
follow ``knm.cli.helpers``: 0 fine, 1 not found or failed, 2 usage error.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from knm.cli.helpers import (
    FAILED,
    broker_guard,
    console,
    current_settings,
    die,
    open_knm,
    print_json,
    producer_app,
)

requests_app = typer.Typer(help="Requests sent through the broker: outcomes, dead letters.")

RequestId = Annotated[str, typer.Argument(metavar="REQUEST_ID", help="The request's id.")]
JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON instead of a summary.")]


@requests_app.command("show")
def show(request_id: RequestId, as_json: JsonFlag = False) -> None:
    """Show a request's status, result, events, dead letters and provider calls."""
    from knm.services import request_status

    with open_knm() as knm:
        described = request_status.describe(knm, request_id)
    if described is None:
        die(
            f"no request {request_id} is recorded (outcomes are kept for "
            "KNM_REQUEST_OUTCOME_TTL_S)",
            FAILED,
        )
    if as_json:
        print_json(described)
        return
    _summary(described)


def _summary(described: dict[str, Any]) -> None:
    from knm.cli import render

    out = console()
    out.print(
        f"request {described['request_id']}: {described['status']} ({described['operation']})"
    )
    if described["result"] is not None:
        out.print(render.result_table(described["result"], title="result"))
    for dead in described["dead_letters"]:
        out.print(
            f"dead letter {dead['part']} ({dead['module']}): {dead['reason']} "
            f"after {dead['attempts']} attempts; `knm requests retry "
            f"{described['request_id']}` sends it again"
        )
    for call in described["provider_calls"]:
        out.print(
            f"provider: {call.get('module')} {call.get('action')} {call.get('number')}: "
            f"{call.get('status')}" + (f" ({call['error']})" if call.get("error") else "")
        )
    out.print(f"{len(described['events'])} outcome events")


@requests_app.command("retry")
def retry(
    request_id: RequestId,
    wait: Annotated[
        bool, typer.Option("--wait/--no-wait", help="Wait for the retried shares' results.")
    ] = True,
    timeout: Annotated[
        float, typer.Option("--timeout", min=0.1, metavar="SECONDS", help="How long to wait.")
    ] = 60.0,
    as_json: JsonFlag = False,
) -> None:
    """Send a request's dead-lettered shares again (same request id: nothing done is redone)."""
    from knm.services import request_status
    from workers import producer

    settings = current_settings()
    app = producer_app(settings)
    results: list[Any] = []
    sent: list[tuple[str, Any]] = []
    with open_knm() as knm, broker_guard(settings):
        if request_status.describe(knm, request_id) is None:
            die(f"no request {request_id} is recorded", FAILED)
        shares = request_status.dead_shares(knm, request_id)
        if not shares:
            die(f"request {request_id} has no dead letters to retry", FAILED)
        for dead in shares:
            request_status.prepare_retry(knm, dead)
            try:
                result = producer.send(dead["task"], dead["kwargs"], timeout=timeout, app=app)
            except BaseException:
                request_status.undo_retry(knm, dead)
                raise
            sent.append((dead["task"], result))
        for name, result in sent:
            if wait:
                results.append(producer.wait(result, name, timeout=timeout).result)
            else:
                results.append({"task_id": result.id, "task": name})
    if as_json:
        print_json({"request_id": request_id, "retried": results})
        return
    from knm.cli import render

    for value in results:
        if isinstance(value.get("succeeded"), dict):  # a request's result, not a chunk's report
            console().print(render.result_table(value, title=f"retry of {request_id}"))
        else:
            typer.echo(f"sent {value['task']} as task {value['task_id']}")


def register(cli: typer.Typer) -> None:
    """Add ``knm requests ...`` to the command line."""
    cli.add_typer(requests_app, name="requests")
