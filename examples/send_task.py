"""Call knm from a service that does not import knm: only `celery` is needed.

    KNM_BROKER_URL=redis://127.0.0.1:6379/0 knm worker &          # a knm worker
    python examples/send_task.py redis://127.0.0.1:6379/0          # this producer

Task names are stable (knm.numbers.create|activate|reserve|release|delete|update|get,
knm.search); payloads are JSON keyword arguments; results are the JSON the CLI prints with
--json: {"succeeded": {E.164: stored document}, "failed": {input: error}}.
"""

from __future__ import annotations

import sys

from celery import Celery

broker = sys.argv[1] if len(sys.argv) > 1 else "redis://127.0.0.1:6379/0"
client = Celery(broker=broker, backend=broker)

ACCOUNT = "0000000000000000000000000000e4a1"  # any 32-character id; system creates it below
NUMBERS = ["+14155550190", "4155550191"]  # any reconcilable form

# Create numbers for the account (auth_by defaults to "system", the superuser).
created = client.send_task(
    "knm.numbers.create", kwargs={"numbers": NUMBERS, "account": ACCOUNT}
).get(timeout=60)
print("created:", sorted(created["succeeded"]), "failed:", created["failed"])

# Activate one (KAZOO's move): runs on the queue of the number's carrier module.
activated = client.send_task(
    "knm.numbers.activate", kwargs={"numbers": NUMBERS[:1], "account": ACCOUNT}
).get(timeout=60)
for number, doc in activated["succeeded"].items():
    print("activated:", number, doc["pvt_state"], doc["pvt_assigned_to"], doc["pvt_carrier_module"])

# Errors come back per number, with KAZOO's names and codes.
got = client.send_task("knm.numbers.get", kwargs={"numbers": ["1000", *NUMBERS]}).get(timeout=60)
print("get failed:", got["failed"])

# Release them: local numbers are deleted on release.
released = client.send_task("knm.numbers.release", kwargs={"numbers": NUMBERS}).get(timeout=60)
print("released:", {n: d["pvt_state"] for n, d in released["succeeded"].items()})
