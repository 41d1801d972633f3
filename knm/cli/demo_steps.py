"""The steps of ``knm demo``: each producer kind sends work to a real worker, step by step.

``knm.cli.demo`` starts the worker and the carrier sandbox and stops them; this module holds what
the demo *does* with them: a CSV import, numbers dispatched per carrier queue, a purchase from a
fake provider that fails once, an aging sweep sent the way beat sends it (a few months ahead),
a provisioning request from another service (a plain Celery client with ``request_id`` and
``reply_to``), then ``knm status``.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Final

from rich.console import Console

from knm.cli import render
from knm.cli.helpers import open_knm
from knm.domain.accounts import Account
from knm.services import numbers_requests as requests
from knm.services.jobs import FINAL_STATUSES, JobStore, create_job
from knm.services.numbers_requests import NumbersRequest, Operation
from knm.services.search import SearchQuery

if TYPE_CHECKING:
    from celery import Celery

    from carriers.sandbox import Sandbox
    from config.settings import Settings

DEMO_RESELLER: Final[str] = "demoreseller".ljust(32, "0")
DEMO_CHILD: Final[str] = "demochild".ljust(32, "0")
#: knm_local numbers the CSV import makes available (the customer finds and reserves them).
DEMO_LOCAL: Final[tuple[str, ...]] = ("+14155550170", "+14155550171", "+14155550172")
#: knm_inventory numbers: the first in service for the reseller (released, then aged), the
#: second available (another service activates it).
DEMO_INVENTORY: Final[tuple[str, ...]] = ("+14155550173", "+14155550174")
#: A row the import refuses (its state cell is not a state): it fails alone.
DEMO_BAD_ROW: Final[str] = "+14155550175"
DEMO_NUMBERS: Final[tuple[str, ...]] = (*DEMO_LOCAL, *DEMO_INVENTORY)
DEMO_CSV: Final[str] = "demo-import.csv"
#: How far ahead the aging sweep pretends to run: past KNM_AGING_EXPIRY_D (90 days).
DEMO_TIME_TRAVEL: Final[timedelta] = timedelta(days=91)
#: The queue the other service reads its outcome events from.
DEMO_REPLY_QUEUE: Final[str] = "demo.billing.replies"
STEP_TIMEOUT_S: Final[float] = 60.0
EVENTS_TIMEOUT_S: Final[float] = 15.0


class DemoError(Exception):
    """The demo cannot go on (the worker died, did not answer, or a step went wrong)."""


@dataclass
class Demo:
    """What every step needs: the console, the publishing app, settings, the sandbox."""

    out: Console
    app: Celery
    settings: Settings
    sandbox: Sandbox | None
    bought: list[str] = field(default_factory=list)

    # ------------------------------------------------------------------------------ helpers
    def step(self, title: str, op: Operation, **fields: Any) -> dict[str, Any]:
        """One numbers request through the broker; shows the result and where it ran."""
        from workers import producer

        request = NumbersRequest.model_validate(fields)
        reply = producer.call_reply(op, request, STEP_TIMEOUT_S, app=self.app)
        self.out.print(render.result_table(reply.result, title=title))
        self.out.print(handled_by(producer.task_name(op), reply), soft_wrap=True)
        result: dict[str, Any] = reply.result
        return result

    def search(self, title: str, query: SearchQuery) -> list[dict[str, Any]]:
        from workers import producer

        found = producer.call_task(
            producer.SEARCH_TASK,
            query.model_dump(mode="json", exclude_none=True),
            timeout=STEP_TIMEOUT_S,
            app=self.app,
        )
        self.out.print(render.search_rows_table(found.result, title=title))
        self.out.print(handled_by(producer.SEARCH_TASK, found), soft_wrap=True)
        rows: list[dict[str, Any]] = found.result
        return rows

    def note(self, text: str) -> None:
        self.out.print(text, markup=False, soft_wrap=True)


def handled_by(name: str, reply: Any) -> str:
    queue = reply.queue or "?"
    worker = reply.worker or "?"
    return f"[dim]   {name} → queue {queue}, worker {worker}, {reply.seconds * 1000:.0f} ms[/dim]"


# ---------------------------------------------------------------------------------- setup
def prepare() -> tuple[list[Account], int]:
    """The demo accounts (created if missing); demo numbers an earlier run left are deleted."""
    with open_knm() as knm:
        accounts: list[Account] = []
        for account_id, name, parent in (
            (DEMO_RESELLER, "Demo Reseller", None),
            (DEMO_CHILD, "Demo Customer", DEMO_RESELLER),
        ):
            account = knm.get_account(account_id)
            if account is None:
                account = knm.create_account(
                    account_id, name, parent=parent, allow_additions=parent is None
                )
            accounts.append(account)
        leftovers = requests.execute(
            knm, Operation.DELETE, NumbersRequest(numbers=[*DEMO_NUMBERS, DEMO_BAD_ROW])
        )
    return accounts, len(leftovers["succeeded"])


# ---------------------------------------------------------------------------------- steps
def csv_import(demo: Demo) -> None:
    """An operator's CSV file, stored as a job and run in chunks by the worker."""
    from workers import producer

    path = demo.settings.data_dir.expanduser().resolve() / DEMO_CSV
    rows = [
        "e164,carrier_module,state,account_id",
        *(f"{n},knm_local,available," for n in DEMO_LOCAL),
        f"{DEMO_INVENTORY[0]},knm_inventory,in_service,{DEMO_RESELLER}",
        f"{DEMO_INVENTORY[1]},knm_inventory,available,",
        f"{DEMO_BAD_ROW},knm_local,bogus,",
    ]
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    with open_knm() as knm:
        job = create_job(
            knm, "import", path, account_id=DEMO_RESELLER, chunk_size=3, source_name=path.name
        )
        producer.submit_job(job.id, job.chunks, app=demo.app)
        store = JobStore(knm)
        deadline = time.monotonic() + STEP_TIMEOUT_S
        while True:
            current = store.get(job.id)
            if current is not None and current.status in FINAL_STATUSES:
                break
            if time.monotonic() >= deadline:
                raise DemoError(f"the import job {job.id} did not finish in {STEP_TIMEOUT_S:g} s")
            time.sleep(0.2)
        failed = [r for r in store.result_rows(job.id) if r.get("error")]
    demo.note(
        f"2. CSV import ({path.name}, {current.rows} rows, {job.chunks} chunks on queue knm): "
        f"job {current.status.value}, {current.succeeded} succeeded, {current.failed} failed"
    )
    for row in failed:
        demo.note(f"   row {row.get('e164', '?')}: {row['error']}")


def local_numbers(demo: Demo) -> None:
    """Search, reserve, activate and a refusal on knm_local: a local carrier, so the work runs
    where it was received (queue knm), with no second hop."""
    demo.search(
        "3. the customer searches 41555501 (every carrier the search asks)",
        SearchQuery(prefix="41555501", quantity=5, account_id=DEMO_CHILD),
    )
    demo.step(
        "4. the reseller reserves two numbers for the customer",
        Operation.RESERVE,
        numbers=list(DEMO_LOCAL[:2]),
        account=DEMO_CHILD,
        auth_by=DEMO_RESELLER,
    )
    demo.step(
        "5. the customer activates one of them",
        Operation.ACTIVATE,
        numbers=list(DEMO_LOCAL[:1]),
        account=DEMO_CHILD,
        auth_by=DEMO_CHILD,
    )
    demo.step(
        "6. the customer tries to delete it (admins only)",
        Operation.DELETE,
        numbers=list(DEMO_LOCAL[:1]),
        auth_by=DEMO_CHILD,
    )


def provider_purchase(demo: Demo) -> None:
    """Buy a number from Telnyx (the sandbox) on its carrier's queue, surviving a 503."""
    from carriers.sandbox import SandboxClient

    query = SearchQuery(prefix="646555", quantity=3, account_id=DEMO_CHILD, carriers=["knm_telnyx"])
    found = demo.search("7. the customer searches 646555 at Telnyx", query)
    if not found:
        demo.note("   Telnyx offered nothing (see the worker log): skipping the purchase")
        return
    number = str(found[0]["number"])
    with open_knm() as knm:  # a number an earlier demo run bought
        requests.execute(knm, Operation.DELETE, NumbersRequest(numbers=[number]))
    client = SandboxClient(demo.sandbox.url) if demo.sandbox is not None else None
    if client is not None:
        client.fault("status", provider="telnyx", match="order", status=503, retry_after=1)
        demo.note("   the sandbox will answer the next order with 503 Service Unavailable")
    demo.step(
        f"8. the customer activates {number}: knm buys it on queue carrier.knm_telnyx",
        Operation.ACTIVATE,
        numbers=[number],
        account=DEMO_CHILD,
        auth_by=DEMO_CHILD,
    )
    demo.bought.append(number)
    if client is not None:
        orders = client.requests("telnyx").get("order", 0)
        bought = client.purchases("telnyx").get(number, 0)
        demo.note(
            f"   the sandbox saw {orders} order requests (a 503, retried after its Retry-After) "
            f"and {bought} purchase of {number}"
        )
        client.close()


def aging(demo: Demo) -> None:
    """Release two numbers into ``aging``, then the sweep beat runs, as of months from now."""
    from workers import producer

    released = [DEMO_INVENTORY[0], *demo.bought]
    demo.step(
        "9. released numbers of other carriers age first (KNM_SHOULD_AGE=true)",
        Operation.RELEASE,
        numbers=released,
    )
    as_of = datetime.now(UTC) + DEMO_TIME_TRAVEL
    reply = producer.call_task(
        "knm.sweeps.age", {"now": as_of.isoformat()}, timeout=STEP_TIMEOUT_S, app=demo.app
    )
    report = reply.result
    demo.note(
        f"10. the aging sweep beat sends, as of {as_of:%Y-%m-%d} "
        f"({DEMO_TIME_TRAVEL.days} days ahead): aged {report.get('aged', 0)} "
        f"in {report.get('batches', 0)} batch(es)"
    )
    demo.out.print(handled_by("knm.sweeps.age", reply), soft_wrap=True)
    demo.step("    the aged numbers are available again", Operation.GET, numbers=released)


def other_service(demo: Demo) -> dict[str, Any]:
    """A service that knows nothing of knm but Celery: ``send_task`` with a ``request_id``
    (idempotency) and a ``reply_to`` queue (outcome events), then the same request again."""
    from celery import Celery
    from kombu import Connection, Queue

    from workers.celery_config import broker_and_backend

    broker, backend, options = broker_and_backend(demo.settings)
    client = Celery("billing-service", broker=broker, backend=backend)
    client.conf.broker_transport_options = options
    number = DEMO_INVENTORY[1]
    payload = {
        "numbers": [number],
        "account": DEMO_CHILD,
        "request_id": f"billing-{uuid.uuid4().hex[:12]}",
        "reply_to": DEMO_REPLY_QUEUE,
    }
    demo.note(
        f"11. another service: Celery(broker={broker!r}).send_task('knm.numbers.activate', "
        f"kwargs={payload})"
    )
    with Connection(broker, transport_options=options) as connection:
        replies = Queue(DEMO_REPLY_QUEUE, durable=True)(connection.default_channel)
        replies.declare()  # before sending, so no event is missed
        replies.purge()
        try:
            first = client.send_task("knm.numbers.activate", kwargs=payload)
            result = first.get(timeout=STEP_TIMEOUT_S)
            demo.out.print(render.result_table(result, title="    its result"))
            events = _read_events(replies, len(result["succeeded"]) + len(result["failed"]))
            for event in events:
                demo.note(
                    f"    event on {DEMO_REPLY_QUEUE}: number.{event['operation']}."
                    f"{event['outcome']} {event['number']} {event['old_state']} -> "
                    f"{event['new_state']} (request {event['request_id']})"
                )
            again = client.send_task("knm.numbers.activate", kwargs=payload).get(
                timeout=STEP_TIMEOUT_S
            )
            demo.note(
                f"    the same request_id sent again returns the same outcome: {again == result}"
            )
        finally:
            replies.delete()
    client.close()
    outcome: dict[str, Any] = result
    return outcome


def _read_events(replies: Any, expected: int) -> list[dict[str, Any]]:
    events: dict[tuple[str, str], dict[str, Any]] = {}
    deadline = time.monotonic() + EVENTS_TIMEOUT_S
    while len(events) < expected and time.monotonic() < deadline:
        message = replies.get(no_ack=False, accept=["json"])
        if message is None:
            time.sleep(0.1)
            continue
        event = message.decode()
        events[(event["request_id"], event["number"])] = event
        message.ack()
    return list(events.values())


def standings(demo: Demo) -> None:
    demo.step(
        "12. where everything stands (system view)",
        Operation.GET,
        numbers=[*DEMO_NUMBERS, *demo.bought, DEMO_BAD_ROW],
    )


def status(demo: Demo) -> None:
    """``knm status``: the queues (and their consumer, the demo's worker) and the carriers."""
    from knm.cli import status as status_command

    demo.out.rule("13. knm status")
    status_command.status(as_json=False)


def run(demo: Demo) -> None:
    """Every step, in order."""
    csv_import(demo)
    local_numbers(demo)
    provider_purchase(demo)
    aging(demo)
    other_service(demo)
    standings(demo)
    status(demo)
