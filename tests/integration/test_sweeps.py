"""Sweeps in process (issue 5): time travel, re-checked writes, locks, run reports, ``knm sweep``.

Numbers are released into ``aging`` by the real release operation (``should_age``) at T (now); a
sweep told it is T + 89 days leaves them, one at T + 91 days makes them available. The sweep's
``now`` is the only clock that moves: nothing sleeps.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

import pytest
from pymongo import MongoClient
from pymongo.database import Database
from typer.testing import CliRunner, Result

from benchmarks.common import CommandCounter
from carriers.base import Carrier
from carriers.registry import CarrierRegistry, default_registry
from config.settings import Settings
from knm.domain.number import NumberState, PhoneNumber, utcnow
from knm.domain.options import Options
from knm.services.facade import Knm
from knm.services.sweeps import Sweeper, SweepKind, SweepLockedError, lock_id
from knm.store.numbers import Store
from tests.fixtures_kazoo import number_doc

pytestmark = pytest.mark.integration

Doc = dict[str, Any]
ACCOUNT = "c5" * 16
MODULE = "knm_sweep_test"
AGING = [f"+1415555{n:04d}" for n in range(100, 106)]
DAY = timedelta(days=1)


class NoopCarrier(Carrier):
    """A non-local carrier whose disconnect does nothing (released numbers of it age)."""

    name: ClassVar[str] = MODULE

    def disconnect_number(self, pn: PhoneNumber) -> None:
        return None


@pytest.fixture
def registry() -> CarrierRegistry:
    registry = default_registry()
    registry.register(NoopCarrier)
    return registry


def _knm(db: Database[Doc], registry: CarrierRegistry, **settings: Any) -> Knm:
    store = Store(db)
    store.ensure_indexes()
    return Knm(store, Settings(should_age=True, **settings), registry)


@pytest.fixture
def knm(mongo_db: Database[Doc], registry: CarrierRegistry) -> Knm:
    app = _knm(mongo_db, registry)
    app.create_account(ACCOUNT, "Reseller", allow_additions=True, reseller=True)
    return app


def _insert(knm: Knm, docs: list[Doc]) -> None:
    if docs:
        knm.store.numbers.insert_many(docs)


def _release_into_aging(knm: Knm, numbers: list[str]) -> datetime:
    """In-service numbers of a non-local carrier, released: aging from (about) now, T."""
    _insert(knm, [number_doc(n, "in_service", MODULE, assigned_to=ACCOUNT) for n in numbers])
    before = utcnow()
    batch = knm.numbers.release(numbers, Options())
    assert batch.failed == {}
    assert {pn.state for pn in batch.succeeded.values()} == {NumberState.AGING}
    return before


def _docs(knm: Knm) -> dict[str, Doc]:
    return {d["_id"]: d for d in knm.store.numbers.find({})}


def _state(knm: Knm, number: str) -> str:
    doc = knm.store.numbers.find_one({"_id": number})
    return "gone" if doc is None else str(doc["pvt_state"])


class HookedSweeper(Sweeper):
    """A sweeper that calls ``hook(batch number, docs)`` between a batch's read and its write."""

    def __init__(self, knm: Knm, hook: Callable[[int, list[Doc]], None], **kw: Any) -> None:
        super().__init__(knm, **kw)
        self.hook = hook
        self.calls = 0

    def _apply(self, kind: Any, state: Any, cutoff: Any, as_of: Any, docs: list[Doc]) -> int:
        self.calls += 1
        self.hook(self.calls, docs)
        return super()._apply(kind, state, cutoff, as_of, docs)


# ================================================================================ time travel
def test_aging_numbers_become_available_only_after_the_expiry(knm: Knm) -> None:
    t = _release_into_aging(knm, AGING)
    _insert(
        knm,
        [
            number_doc("+14155550200", "in_service", MODULE, assigned_to=ACCOUNT),
            number_doc("+14155550201", "available", MODULE),
            number_doc("+14155550202", "reserved", MODULE, assigned_to=ACCOUNT),
        ],
    )
    before = _docs(knm)
    assert {before[n]["pvt_modified"] >= t for n in AGING} == {True}
    sweeper = Sweeper(knm, batch_size=4)

    early = sweeper.run([SweepKind.AGE], now=t + 89 * DAY)
    assert early.counts == {"aged": 0}
    assert early.errors == []
    assert _docs(knm) == before, "nothing changes before the expiry"

    late = sweeper.run([SweepKind.AGE], now=t + 91 * DAY)
    assert late.counts == {"aged": len(AGING)}
    assert late.batches == 2  # 4 + 2
    after = _docs(knm)
    for number, doc in after.items():
        if number in AGING:
            assert doc["pvt_state"] == "available"
            assert doc["pvt_rev"] == before[number]["pvt_rev"] + 1
            assert doc["pvt_modified"] == late.as_of.replace(
                microsecond=late.as_of.microsecond // 1000 * 1000
            )
            assert "pvt_assigned_to" not in doc
        else:
            assert doc == before[number], "numbers in other states are untouched"

    # again: nothing left to age
    assert sweeper.run([SweepKind.AGE], now=t + 200 * DAY).counts == {"aged": 0}
    # the available numbers can be bought again
    moved = knm.numbers.move(AGING[:1], ACCOUNT, Options())
    assert moved.failed == {}


def test_run_reports_are_recorded(knm: Knm) -> None:
    t = _release_into_aging(knm, AGING[:2])
    report = Sweeper(knm).run(list(SweepKind), now=t + 91 * DAY)
    runs = Sweeper(knm).last_runs()
    assert len(runs) == 1
    run = runs[0]
    assert run["_id"] == report.id
    assert run["status"] == "finished"
    assert run["counts"] == {"aged": 2, "purged_discovery": 0, "purged_deleted": 0}
    assert run["kinds"] == ["age", "purge_discovery", "purge_deleted"]
    assert run["started"] <= run["finished"]
    assert run["errors"] == []
    assert list(knm.store.db["locks"].find({})) == [], "the locks are released"
    as_json = report.to_json()
    assert {k: as_json[k] for k in ("aged", "purged_discovery", "purged_deleted")} == {
        "aged": 2,
        "purged_discovery": 0,
        "purged_deleted": 0,
    }


def test_custom_expiry(mongo_db: Database[Doc], registry: CarrierRegistry) -> None:
    knm = _knm(mongo_db, registry, aging_expiry_d=7)
    t = _release_into_aging(knm, AGING[:3])
    assert Sweeper(knm).run([SweepKind.AGE], now=t + 6 * DAY).counts == {"aged": 0}
    assert Sweeper(knm).run([SweepKind.AGE], now=t + 8 * DAY).counts == {"aged": 3}


def test_stale_discovery_documents_and_their_cache_entries_are_purged(knm: Knm) -> None:
    now = utcnow()
    old = [f"+1415555030{i}" for i in range(3)]
    fresh = "+14155550309"
    _insert(
        knm,
        [number_doc(n, "discovery", MODULE, pvt_modified=now - 2 * DAY) for n in old]
        + [
            number_doc(fresh, "discovery", MODULE, pvt_modified=now - timedelta(hours=20)),
            number_doc("+14155550310", "aging", MODULE, pvt_modified=now - 2 * DAY),
        ],
    )
    cache = knm.store.search_cache
    cache.insert_many(
        [
            {"_id": "q-old", "discovery_numbers": old[:2], "expires_at": now + DAY},
            {"_id": "q-fresh", "discovery_numbers": [fresh], "expires_at": now + DAY},
        ]
    )
    report = Sweeper(knm, batch_size=2).run([SweepKind.PURGE_DISCOVERY], now=now)
    assert report.counts == {"purged_discovery": 3}
    assert sorted(_docs(knm)) == [fresh, "+14155550310"]
    assert [d["_id"] for d in cache.find({})] == ["q-fresh"]
    # a day later the fresh one is stale too
    later = Sweeper(knm).run([SweepKind.PURGE_DISCOVERY], now=now + DAY)
    assert later.counts == {"purged_discovery": 1}
    assert list(cache.find({})) == []


def test_deleted_documents_are_purged_whatever_their_age(knm: Knm) -> None:
    now = utcnow()
    docs = [number_doc(f"+1415555040{i}", "deleted", MODULE, pvt_modified=now) for i in range(3)]
    # legacy documents: no pvt_modified, or a KAZOO gregorian-seconds integer
    legacy = number_doc("+14155550410", "deleted", MODULE)
    del legacy["pvt_modified"]
    docs += [legacy, number_doc("+14155550411", "deleted", MODULE, pvt_modified=63_650_000_000)]
    docs.append(number_doc("+14155550412", "in_service", MODULE, assigned_to=ACCOUNT))
    _insert(knm, docs)
    report = Sweeper(knm, batch_size=2).run([SweepKind.PURGE_DELETED], now=now)
    assert report.counts == {"purged_deleted": 5}
    assert sorted(_docs(knm)) == ["+14155550412"]


def test_dry_run_counts_and_changes_nothing(knm: Knm) -> None:
    t = _release_into_aging(knm, AGING)
    _insert(knm, [number_doc("+14155550500", "deleted", MODULE)])
    before = _docs(knm)
    report = Sweeper(knm).run(list(SweepKind), now=t + 91 * DAY, dry_run=True)
    assert report.counts == {"aged": len(AGING), "purged_discovery": 0, "purged_deleted": 1}
    assert report.dry_run
    assert _docs(knm) == before
    assert list(knm.store.db["locks"].find({})) == []
    assert list(knm.store.db["sweep_runs"].find({})) == []


# ================================================================================ re-checks
def test_a_number_touched_during_the_sweep_keeps_its_new_state(knm: Knm) -> None:
    # released 91 days ago, swept now: a write during the sweep happens at the sweep's "now"
    released = utcnow() - 91 * DAY
    _insert(knm, [number_doc(n, "aging", MODULE, pvt_modified=released) for n in AGING])
    reserved, activated, edited = AGING[0], AGING[1], AGING[2]
    child = "c6" * 16
    knm.create_account(child, "Child", parent=ACCOUNT)
    touched: dict[str, Doc] = {}

    def meanwhile(batch: int, docs: list[Doc]) -> None:
        if batch != 1:
            return
        assert {d["_id"] for d in docs} >= {reserved, activated, edited}
        # another request takes numbers the sweep has read but not yet written
        # (aging -> reserved is not a transition: the number is bought, then reserved)
        assert knm.numbers.move([reserved], ACCOUNT, Options()).failed == {}
        got = knm.numbers.reserve([reserved], Options(assign_to=child))
        assert got.failed == {}, got.failed
        assert knm.numbers.move([activated], child, Options()).failed == {}
        assert knm.numbers.assign_to_app([edited], "callflow", Options()).failed == {}
        touched.update({n: knm.store.numbers.find_one({"_id": n}) or {} for n in AGING[:3]})

    sweeper = HookedSweeper(knm, meanwhile)
    report = sweeper.run([SweepKind.AGE])
    assert report.counts == {"aged": len(AGING) - 3}
    assert sweeper.calls == 1, "the touched numbers are no longer due: nothing to re-read"
    after = _docs(knm)
    assert after[reserved]["pvt_state"] == "reserved"
    assert after[activated]["pvt_state"] == "in_service"
    assert after[edited]["pvt_state"] == "aging", "edited: its aging clock restarted"
    for number in (reserved, activated, edited):
        assert after[number] == touched[number], "the sweep wrote nothing over the change"
    for number in AGING[3:]:
        assert after[number]["pvt_state"] == "available"
    # the edited number ages 90 days after its edit
    edit_time = after[edited]["pvt_modified"]
    assert Sweeper(knm).run([SweepKind.AGE], now=edit_time + 89 * DAY).counts == {"aged": 0}
    assert Sweeper(knm).run([SweepKind.AGE], now=edit_time + 91 * DAY).counts == {"aged": 1}


def test_a_discovery_number_bought_during_the_purge_is_kept(knm: Knm) -> None:
    now = utcnow()
    numbers = [f"+1415555060{i}" for i in range(3)]
    _insert(knm, [number_doc(n, "discovery", MODULE, pvt_modified=now - 2 * DAY) for n in numbers])
    knm.store.search_cache.insert_many(
        [
            {"_id": f"q{i}", "discovery_numbers": [n], "expires_at": now + DAY}
            for i, n in enumerate(numbers)
        ]
    )

    def meanwhile(batch: int, docs: list[Doc]) -> None:
        # a concurrent write re-stamps the document (same state, new revision and time)
        if batch == 1:
            knm.store.numbers.update_one(
                {"_id": numbers[0]},
                {"$inc": {"pvt_rev": 1}, "$set": {"pvt_modified": utcnow()}},
            )

    report = HookedSweeper(knm, meanwhile).run([SweepKind.PURGE_DISCOVERY], now=now)
    assert report.counts == {"purged_discovery": 2}
    assert sorted(_docs(knm)) == [numbers[0]]
    assert [d["_id"] for d in knm.store.search_cache.find({})] == ["q0"], "kept number's cache"


def test_a_revision_change_alone_is_retried_not_skipped(knm: Knm) -> None:
    t = _release_into_aging(knm, AGING[:3])

    def meanwhile(batch: int, docs: list[Doc]) -> None:
        if batch == 1:  # same state and age, new revision: the write misses, the next batch gets it
            knm.store.numbers.update_one({"_id": AGING[0]}, {"$inc": {"pvt_rev": 1}})

    sweeper = HookedSweeper(knm, meanwhile, batch_size=3)
    report = sweeper.run([SweepKind.AGE], now=t + 91 * DAY)
    assert report.counts == {"aged": 3}
    assert sweeper.calls == 2
    assert {_state(knm, n) for n in AGING[:3]} == {"available"}


# ================================================================================ locks
def test_two_sweeps_started_together_one_runs_the_other_reports_the_lock(knm: Knm) -> None:
    t = _release_into_aging(knm, AGING)
    revs = {n: d["pvt_rev"] for n, d in _docs(knm).items()}
    barrier = threading.Barrier(2)
    outcomes: list[Any] = []

    def slow(batch: int, docs: list[Doc]) -> None:
        threading.Event().wait(0.3)  # hold the lock a while: the other one tries meanwhile

    def one() -> None:
        sweeper = HookedSweeper(knm, slow, batch_size=2)
        barrier.wait()
        try:
            outcomes.append(sweeper.run([SweepKind.AGE], now=t + 91 * DAY))
        except SweepLockedError as exc:
            outcomes.append(exc)

    threads = [threading.Thread(target=one) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    locked = [o for o in outcomes if isinstance(o, SweepLockedError)]
    ran = [o for o in outcomes if not isinstance(o, SweepLockedError)]
    assert len(locked) == 1, outcomes
    assert len(ran) == 1, outcomes
    assert "another age sweep is running" in str(locked[0])
    assert ran[0].counts == {"aged": len(AGING)}
    after = _docs(knm)
    assert {n: after[n]["pvt_rev"] - revs[n] for n in AGING} == dict.fromkeys(AGING, 1)
    assert len(Sweeper(knm).last_runs()) == 1, "the locked sweep recorded no run"


def test_sweeps_of_different_kinds_do_not_block_each_other(knm: Knm) -> None:
    """Beat fires the three sweeps together: each kind has its own lock, so all of them run."""
    t = _release_into_aging(knm, AGING[:2])
    _insert(knm, [number_doc("+14155550700", "deleted", MODULE)])
    results: dict[str, Any] = {}

    def hold(batch: int, docs: list[Doc]) -> None:
        results["purge"] = Sweeper(knm).run([SweepKind.PURGE_DELETED])
        with pytest.raises(SweepLockedError):
            Sweeper(knm).run(list(SweepKind), now=t + 91 * DAY)

    report = HookedSweeper(knm, hold).run([SweepKind.AGE], now=t + 91 * DAY)
    assert report.counts == {"aged": 2}
    assert results["purge"].counts == {"purged_deleted": 1}
    assert list(knm.store.db["locks"].find({})) == []


def test_an_expired_lock_is_taken_over_and_its_run_marked_abandoned(knm: Knm) -> None:
    t = _release_into_aging(knm, AGING[:2])
    dead = {"id": "deadbeef", "kinds": ["age"], "started": t, "counts": {"aged": 7}}
    knm.store.db["locks"].insert_one(
        {
            "_id": lock_id(SweepKind.AGE),
            "owner": "host:1:dead",
            "acquired": t,
            "expires_at": utcnow() - timedelta(seconds=1),
            "run": dead,
        }
    )
    report = Sweeper(knm).run([SweepKind.AGE], now=t + 91 * DAY)
    assert report.counts == {"aged": 2}
    runs = {r["_id"]: r for r in knm.store.db["sweep_runs"].find({})}
    assert runs["deadbeef"]["status"] == "abandoned"
    assert runs["deadbeef"]["counts"] == {"aged": 7}
    assert runs[report.id]["status"] == "finished"


def test_a_live_lock_is_respected(knm: Knm) -> None:
    t = _release_into_aging(knm, AGING[:2])
    knm.store.db["locks"].insert_one(
        {
            "_id": lock_id(SweepKind.AGE),
            "owner": "elsewhere:1:live",
            "acquired": t,
            "expires_at": utcnow() + timedelta(minutes=5),
        }
    )
    with pytest.raises(SweepLockedError, match="elsewhere:1:live"):
        Sweeper(knm).run(list(SweepKind), now=t + 91 * DAY)
    assert {_state(knm, n) for n in AGING[:2]} == {"aging"}
    # all or nothing: the purge locks it took before meeting the age lock are released
    assert [d["_id"] for d in knm.store.db["locks"].find({})] == [lock_id(SweepKind.AGE)]


def test_a_sweep_that_loses_its_lock_stops_and_records_the_failure(knm: Knm) -> None:
    t = _release_into_aging(knm, AGING[:4])

    def steal(batch: int, docs: list[Doc]) -> None:
        knm.store.db["locks"].update_one(
            {"_id": lock_id(SweepKind.AGE)}, {"$set": {"owner": "thief:1:x"}}
        )

    sweeper = HookedSweeper(knm, steal, batch_size=2, lock_ttl_s=0)  # renew after every batch
    with pytest.raises(SweepLockedError) as caught:
        sweeper.run([SweepKind.AGE], now=t + 91 * DAY)
    assert caught.value.lost
    run = knm.store.db["sweep_runs"].find_one({})
    assert run is not None
    assert run["status"] == "failed"
    assert run["counts"] == {"aged": 2}
    assert "took over" in run["errors"][0]
    lock = knm.store.db["locks"].find_one({})
    assert lock is not None
    assert lock["owner"] == "thief:1:x", "not released by the loser"


# ================================================================================ cost
def test_commands_follow_the_due_numbers_not_the_collection(
    mongo_url: str, mongo_db: Database[Doc], registry: CarrierRegistry
) -> None:
    counter = CommandCounter()
    client: MongoClient[Doc] = MongoClient(mongo_url, tz_aware=True, event_listeners=[counter])
    try:
        knm = _knm(client[mongo_db.name], registry)
        now = utcnow()
        old = now - 100 * DAY

        def due(start: int, count: int) -> list[Doc]:
            return [
                number_doc(f"+1212555{i:04d}", "aging", MODULE, pvt_modified=old)
                for i in range(start, start + count)
            ]

        counts = []
        for not_due in (0, 60, 180):
            knm.store.numbers.delete_many({})
            docs = due(0, 20)
            # not due: recent aging numbers (same index prefix) and numbers in other states
            docs += [
                number_doc(
                    f"+1646555{i:04d}",
                    "aging" if i % 2 else "in_service",
                    MODULE,
                    pvt_modified=now - DAY,
                )
                for i in range(not_due)
            ]
            _insert(knm, docs)
            counter.reset()
            report = Sweeper(knm, batch_size=10).run([SweepKind.AGE], now=now)
            assert report.counts == {"aged": 20}
            counts.append(dict(counter.counts))
        assert counts[0] == counts[1] == counts[2], counts
        # 2 batches of 10: 2 finds, 2 bulk updates; lock, report, unlock
        assert counts[0] == {"find": 2, "update": 2, "insert": 2, "delete": 1}, counts[0]
    finally:
        client.close()


# ================================================================================ the CLI
@pytest.fixture
def cli(mongo_url: str, mongo_db: Database[Doc]) -> Callable[..., Result]:
    from knm.cli import root
    from knm.cli.maintenance import register

    register(root.cli)
    runner = CliRunner()
    env = {"KNM_MONGODB_URL": mongo_url, "KNM_MONGODB_DB": mongo_db.name}

    def run(*args: str, code: int = 0) -> Result:
        result = runner.invoke(root.cli, list(args), env=env)
        assert result.exception is None or isinstance(result.exception, SystemExit), result.exc_info
        assert result.exit_code == code, (result.stdout, result.stderr)
        assert "Traceback" not in result.stdout + result.stderr
        return result

    return run


def test_cli_sweep_json_time_travel(knm: Knm, cli: Callable[..., Result]) -> None:
    t = _release_into_aging(knm, AGING[:3])
    _insert(knm, [number_doc("+14155550800", "deleted", MODULE)])
    _insert(knm, [number_doc("+14155550801", "discovery", MODULE, pvt_modified=t - 2 * DAY)])
    at = (t + 89 * DAY).isoformat()
    dry = json.loads(cli("sweep", "all", "--now", at, "--dry-run", "--json").stdout)
    assert (dry["aged"], dry["purged_discovery"], dry["purged_deleted"]) == (0, 1, 1)
    assert dry["dry_run"] is True
    out = json.loads(cli("sweep", "--now", at, "--json").stdout)
    assert (out["aged"], out["purged_discovery"], out["purged_deleted"]) == (0, 1, 1)
    naive = (t + 91 * DAY).replace(tzinfo=None).isoformat()  # no offset: UTC
    out = json.loads(cli("sweep", "age", "--now", naive, "--json").stdout)
    assert (out["aged"], out["purged_discovery"], out["purged_deleted"]) == (3, 0, 0)
    assert out["kinds"] == ["age"]
    assert datetime.fromisoformat(out["as_of"]) == (t + 91 * DAY).replace(tzinfo=UTC)
    assert out["errors"] == []
    assert {_state(knm, n) for n in AGING[:3]} == {"available"}


def test_cli_sweep_table_and_bad_now(knm: Knm, cli: Callable[..., Result]) -> None:
    _insert(knm, [number_doc("+14155550900", "deleted", MODULE)])
    table = cli("sweep", "purge-deleted").stdout
    assert "deleted purged" in table
    bad = cli("sweep", "age", "--now", "next tuesday", code=2)
    lines = bad.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "--now must be an ISO 8601 time" in lines[0]
    assert cli("sweep", "sideways", code=2).stderr.count("\n") == 1


def test_cli_sweep_reports_a_held_lock_in_one_line_and_exits_0(
    knm: Knm, cli: Callable[..., Result]
) -> None:
    t = _release_into_aging(knm, AGING[:2])
    seen: dict[str, Result] = {}

    def second(batch: int, docs: list[Doc]) -> None:
        seen["json"] = cli("sweep", "age", "--now", (t + 91 * DAY).isoformat(), "--json")
        seen["text"] = cli("sweep", "all")

    report = HookedSweeper(knm, second).run([SweepKind.AGE], now=t + 91 * DAY)
    assert report.counts == {"aged": 2}
    lines = seen["json"].stdout.strip().splitlines()
    assert len(lines) == 1
    payload = json.loads(lines[0])
    assert payload["locked"] is True
    assert "another age sweep is running" in payload["message"]
    text = seen["text"].stdout.strip().splitlines()
    assert len(text) == 1, text
    assert text[0].startswith("knm sweep: another age sweep is running"), text
    assert seen["text"].stderr == ""


# ================================================================================ beat
def test_beat_schedules_the_three_sweeps_every_crawler_interval() -> None:
    from workers.app import create_app

    schedule = create_app(Settings(crawler_interval=timedelta(hours=6))).conf.beat_schedule
    assert sorted(schedule) == [
        "knm.sweeps.age",
        "knm.sweeps.purge_deleted",
        "knm.sweeps.purge_discovery",
    ]
    for name, entry in schedule.items():
        assert entry["task"] == name
        assert entry["schedule"] == 6 * 3600
    default = create_app(Settings()).conf.beat_schedule
    assert {e["schedule"] for e in default.values()} == {86_400}


def test_crawler_interval_and_expiries_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KNM_CRAWLER_INTERVAL", "PT6H")
    monkeypatch.setenv("KNM_AGING_EXPIRY_D", "30")
    monkeypatch.setenv("KNM_DISCOVERY_EXPIRY_D", "2")
    monkeypatch.setenv("KNM_SWEEP_BATCH_SIZE", "50")
    settings = Settings()
    assert settings.crawler_interval == timedelta(hours=6)
    assert (settings.aging_expiry_d, settings.discovery_expiry_d) == (30, 2)
    assert settings.sweep_batch_size == 50
    for value in ("P1D", "1 day", "24:00:00"):
        monkeypatch.setenv("KNM_CRAWLER_INTERVAL", value)
        assert Settings().crawler_interval == timedelta(days=1)


def test_crawler_interval_in_seconds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KNM_CRAWLER_INTERVAL", "3600")
    assert Settings().crawler_interval == timedelta(hours=1)


@pytest.fixture(autouse=True)
def _no_leftover_threads() -> Iterator[None]:
    before = set(threading.enumerate())
    yield
    for thread in set(threading.enumerate()) - before:
        thread.join(5)
