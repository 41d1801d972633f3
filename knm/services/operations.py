"""The number operations (KAZOO's ``knm_numbers``/``knm_ops``).

Every operation takes many numbers and returns a ``Batch``: each number succeeds or fails on its
own. One run costs a fixed number of store round trips whatever the batch size: one ``find`` for
the numbers, one aggregation for the accounts involved (with their resellers and the system
config the feature rules read), at most one more lookup (port requests, the search cache), one
bulk write. A number whose ``pvt_rev`` moved between the read and the write is re-run on the fresh
document, so concurrent operations never lose each other's updates.

Every changed number runs the feature providers before the write (``knm.features``);
release and hard delete de-provision features before wiping them.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from carriers.base import Carrier, CarrierContext
from carriers.registry import CarrierRegistry, default_registry
from config.settings import Settings
from knm.domain import convert, errors, states
from knm.domain.accounts import SYSTEM, AccountDirectory, is_account_id
from knm.domain.batch import Batch
from knm.domain.carrier_modules import CarrierModules
from knm.domain.errors import KnmError
from knm.domain.number import NumberState, PhoneNumber
from knm.domain.options import Options
from knm.domain.states import Call, Event, ReleasePolicy, Transition, TransitionContext
from knm.services import features
from knm.services.feature_providers import ProviderRegistry
from knm.services.features import FeatureEnv
from knm.services.search import SearchCache
from knm.store.numbers import Store
from knm.store.system_config import SystemConfig

S = NumberState
Setter = Callable[[PhoneNumber], None]


@dataclass
class RunContext:
    """What one attempt of an operation sees: options, accounts, stored docs, feature rules."""

    options: Options
    accounts: AccountDirectory
    docs: dict[str, dict[str, Any]]
    features: FeatureEnv
    policy: ReleasePolicy = field(default_factory=ReleasePolicy)

    @property
    def transitions(self) -> TransitionContext:
        return TransitionContext(self.options, self.accounts, self.policy)


Plan = Callable[[Batch, RunContext], None]
Missing = Callable[[list[str], RunContext, Batch], list[PhoneNumber]]


class NumberManager:
    """Runs operations on numbers against a store and the carrier registry."""

    def __init__(
        self,
        store: Store,
        settings: Settings,
        carriers: CarrierRegistry | None = None,
        providers: ProviderRegistry | None = None,
    ) -> None:
        self.store = store
        self.settings = settings
        self.carriers = carriers or default_registry(settings)
        #: Feature provider modules; a carrier rename accepts this manager's carriers.
        self.providers = providers or ProviderRegistry(carriers=self.carriers)
        self.carrier_ctx = CarrierContext(store.db, settings)
        self.search_cache = SearchCache(
            store.search_cache, settings.search_cache_ttl_s, store.max_in
        )

    @property
    def modules(self) -> CarrierModules:
        """What the registered carrier modules are to the number rules."""
        return self.carriers.modules(self.settings.available_module_name)

    # ================================================================== public operations
    def get(self, numbers: Iterable[str], options: Options | None = None) -> Batch:
        """Fetch numbers the requester may see (a given ``module_name`` is applied)."""

        def plan(batch: Batch, ctx: RunContext) -> None:
            module = ctx.options.module_name
            if "module_name" in ctx.options.model_fields_set and module:
                batch.step(lambda pn: pn.set_carrier_module(module))

        return self._run(numbers, options or Options(), plan, write=False)

    def create(
        self,
        numbers: Iterable[str],
        options: Options,
        public_by_number: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> Batch:
        """Create new numbers or take over existing aging/available/port_in ones.

        ``public_by_number`` gives each number its own public fields (a CSV import's rows),
        replacing them as ``options.public_fields`` would for all.
        """
        plan: Plan = self._plan_create
        if public_by_number is not None:
            per_number = public_by_number

            def plan(batch: Batch, ctx: RunContext) -> None:
                def reset(pn: PhoneNumber) -> None:
                    if pn.number in per_number:
                        pn.reset_public(per_number[pn.number])

                batch.step(reset)
                self._plan_create(batch, ctx)

        return self._run(
            numbers, options, plan, missing=self._new_numbers, precheck=self._can_create
        )

    def move(
        self, numbers: Iterable[str], to_account: str, options: Options | None = None
    ) -> Batch:
        """Activate: move numbers to ``to_account`` in service, acquiring discovered ones."""
        opts = (options or Options()).but(assign_to=to_account)

        def precheck(ctx: RunContext) -> KnmError | None:
            return None if is_account_id(to_account) else errors.assign_failure()

        return self._run(
            numbers,
            opts,
            self._plan_target(S.IN_SERVICE),
            missing=self._discovered_numbers,
            precheck=precheck,
            visibility=True,
        )

    def reserve(self, numbers: Iterable[str], options: Options) -> Batch:
        """Reserve numbers for ``options.assign_to``.

        As in KAZOO the numbers are fetched first: missing, unreconcilable or invisible numbers
        keep their own reason, only the fetched ones fail ``assign_failure``.
        """
        to_reserved = self._plan_target(S.RESERVED)

        def plan(batch: Batch, ctx: RunContext) -> None:
            if is_account_id(ctx.options.assign_to):
                to_reserved(batch, ctx)
                return

            def refuse(pn: PhoneNumber) -> None:
                raise errors.assign_failure()

            batch.step(refuse)

        return self._run(numbers, options, plan, visibility=True)

    def release(self, numbers: Iterable[str], options: Options | None = None) -> Batch:
        """Release numbers: unwind the reserve history, disconnect, age or delete."""
        return self._run(numbers, options or Options(), self._plan_release, deletes=True)

    def delete(self, numbers: Iterable[str], options: Options | None = None) -> Batch:
        """Hard-delete numbers in any state; admins only."""
        opts = options or Options()

        def precheck(ctx: RunContext) -> KnmError | None:
            if ctx.accounts.is_admin(opts.auth_by):
                return None
            return errors.unauthorized("only system or a superduper admin may hard-delete numbers")

        def plan(batch: Batch, ctx: RunContext) -> None:
            self._through_table(batch, ctx, lambda pn: Event.DELETE)

        return self._run(numbers, opts, plan, precheck=precheck, deletes=True)

    def update(
        self,
        numbers: Iterable[str],
        setters: Sequence[Setter],
        options: Options | None = None,
        *,
        remove_denied_features: bool = False,
        apply_features: bool = True,
    ) -> Batch:
        """Apply setter functions (no state engine) and save (KAZOO's update).

        ``remove_denied_features`` then strips the features the number may no longer use
        (KAZOO's ``remove_denied_features`` setter: the "fix number" maintenance).
        ``apply_features=False`` skips the feature providers (KAZOO's plain save).
        """

        def plan(batch: Batch, ctx: RunContext) -> None:
            for setter in setters:
                batch.step(setter)
            if remove_denied_features:
                batch.step(lambda pn: features.remove_denied_features(pn, ctx.features))

        return self._run(
            numbers, options or Options(), plan, visibility=True, apply_features=apply_features
        )

    def assign_to_app(
        self, numbers: Iterable[str], app: str | None, options: Options | None = None
    ) -> Batch:
        """Record which application uses the numbers (callflow, trunkstore, ...).

        A plain save, as in KAZOO: no feature providers run.
        """
        return self.update(numbers, [lambda pn: pn.set_used_by(app)], options, apply_features=False)

    # ================================================================== the runner
    def _run(
        self,
        inputs: Iterable[str],
        options: Options,
        plan: Plan,
        *,
        missing: Missing | None = None,
        precheck: Callable[[RunContext], KnmError | None] | None = None,
        visibility: bool = True,
        write: bool = True,
        deletes: bool = False,
        apply_features: bool = True,
    ) -> Batch:
        result = Batch()
        pending: list[str] = []
        for raw in inputs:
            if not convert.is_reconcilable(raw, self.settings.reconcile_regex):
                result.fail(raw, errors.not_reconcilable())
                continue
            number = convert.normalize(raw, self.settings.e164_converters)
            if number not in pending:
                pending.append(number)

        module = options.module_name
        named = "module_name" in options.model_fields_set and module
        if pending and named and module not in self.carriers:
            # a module no registered carrier owns: refused before anything is read or stored
            for number in pending:
                result.fail(number, errors.carrier_not_found(str(module)))
            return result

        for _attempt in range(self.settings.max_conflict_retries):
            if not pending:
                break
            ctx = self._load(pending, options)
            if precheck is not None and (refusal := precheck(ctx)) is not None:
                for number in pending:
                    result.fail(number, refusal)
                return result
            batch = self._fetch(pending, ctx, missing, visibility, deletes)
            plan(batch, ctx)
            if write and apply_features:
                batch.step(partial(self._apply_features, ctx=ctx))
            batch.finish()
            for pn in batch.succeeded.values():
                pn.set_available_features(features.available_features(pn, ctx.features))
            if write and not options.dry_run:
                committed = self._save(batch, ctx)
                pending = sorted(committed.conflicts)
            else:
                pending = []
            for key, error in batch.failed.items():
                if key not in pending:
                    result.fail(key, error)
            for number, pn in batch.succeeded.items():
                if number not in pending:
                    result.succeed(pn)
        for number in pending:
            result.fail(number, errors.unspecified("database_error", "revision conflict"))
        return result

    def _load(self, numbers: list[str], options: Options) -> RunContext:
        """Read the numbers, then the accounts and the system config, in one query each.

        The accounts are the requester, the target account and the numbers' owners, with
        their resellers (whose ``number_manager`` the feature rules read).
        """
        docs = self.store.find_numbers(numbers)
        ids: set[str | None] = {options.auth_by, options.assign_to}
        for doc in docs.values():
            ids.add(doc.get("pvt_assigned_to"))
        ids.discard(SYSTEM)
        found, config = self.store.find_accounts_and_config(ids)
        accounts = AccountDirectory(found)
        env = FeatureEnv(
            system=SystemConfig.from_document(config, self.settings),
            carrier_ctx=self.carrier_ctx,
            accounts=accounts,
            auth_by=options.auth_by,
            providers=self.providers,
            dry_run=options.dry_run,
            request_id=options.request_id,
        )
        policy = ReleasePolicy(
            released_state=S(self.settings.released_state),
            should_age=self.settings.should_age,
            permanently_delete=self.settings.should_permanently_delete,
        )
        return RunContext(options, accounts, docs, env, policy)

    def _fetch(
        self,
        numbers: list[str],
        ctx: RunContext,
        missing: Missing | None,
        visibility: bool,
        deletes: bool = False,
    ) -> Batch:
        """Load records; apply KAZOO's fetch visibility; hand missing numbers to ``missing``.

        ``deletes``: the operation may hard-delete, so a missing number may be one this very
        request already deleted (its tombstone says so).
        """
        batch = Batch()
        absent: list[str] = []
        for number in numbers:
            doc = ctx.docs.get(number)
            if doc is None:
                absent.append(number)
                continue
            try:
                pn = PhoneNumber.from_document(doc, self.modules)
            except (ValueError, TypeError) as exc:  # a stored document knm cannot read
                batch.fail(number, errors.unspecified("invalid_document", str(exc)))
                continue
            request_id = ctx.options.request_id
            if request_id is not None and pn.written_by(request_id):
                batch.succeed(pn)  # a redelivered request: this number is already done
                continue
            if visibility and not ctx.accounts.is_visible(
                pn, ctx.options.auth_by, ctx.options.assign_to
            ):
                cause = ctx.accounts.visibility_refusal(pn, ctx.options.auth_by)
                batch.fail(number, errors.unauthorized(cause))
                continue
            batch.todo.append(pn)
        request_id = ctx.options.request_id
        if deletes and absent and request_id is not None:
            # numbers this very request already deleted (a rerun): report that deletion again
            for number, doc in self.store.find_tombstones(absent, request_id).items():
                pn = PhoneNumber.from_document(doc, self.modules)
                pn.mark_deleted()
                pn._stored = False  # already gone: nothing left to delete
                batch.succeed(pn)
                absent.remove(number)
        if absent:
            if missing is None:
                for number in absent:
                    batch.fail(number, errors.not_found())
            else:
                batch.todo.extend(missing(absent, ctx, batch))
        return batch

    # ================================================================== features
    def _apply_features(self, pn: PhoneNumber, ctx: RunContext) -> None:
        """The providers step of the save pipeline for a changed, kept number.

        A dry run still computes the result (knm's providers) but calls nothing upstream.
        """
        if pn.deleted or not pn.dirty:
            return
        features.apply_on_save(pn, ctx.features)

    # ================================================================== saving
    def _save(self, batch: Batch, ctx: RunContext) -> Any:
        """The persist step of the save pipeline: MDN guard, then one bulk write."""
        options = ctx.options

        def mdn_guard(pn: PhoneNumber) -> None:
            if pn.deleted or not pn.dirty or options.auth_by == SYSTEM:
                return
            if pn.is_mdn and not options.mdn_run:
                raise errors.unauthorized(
                    f"number {pn.number} is an MDN: only an MDN run changes it"
                )
            if options.mdn_run and not pn.is_mdn:
                raise errors.unauthorized(
                    f"an MDN run changes only MDNs and number {pn.number} is not one"
                )

        batch.todo = list(batch.succeeded.values())
        batch.succeeded = {}
        batch.step(mdn_guard)
        batch.finish()
        if options.request_id is not None:
            for pn in batch.succeeded.values():
                if pn.dirty or pn.deleted:
                    pn.stamp_request(options.request_id)
            self.store.put_tombstones(
                [pn for pn in batch.succeeded.values() if pn.deleted and pn.stored],
                options.request_id,
                self.settings.request_outcome_ttl_s,
            )
        committed = self.store.commit(list(batch.succeeded.values()))
        for number, error in committed.failed.items():
            batch.fail(number, error)
        return committed

    # ================================================================== option setters
    def _apply_option_setters(self, pn: PhoneNumber, options: Options) -> None:
        """Setters for the options the caller gave explicitly, except ``state``."""
        given = options.model_fields_set
        if "module_name" in given and options.module_name:
            pn.set_carrier_module(options.module_name)
        if "ported_in" in given:
            pn.set_ported_in(options.ported_in)
        if "public_fields" in given and options.public_fields is not None:
            pn.reset_public(options.public_fields)

    # ================================================================== carriers
    def _by_carrier(
        self, pns: list[PhoneNumber]
    ) -> list[tuple[str, Carrier | None, list[PhoneNumber]]]:
        """Records grouped by their carrier module, with the module (None when unknown)."""
        by_module: dict[str, list[PhoneNumber]] = defaultdict(list)
        for pn in pns:
            by_module[pn.carrier_module].append(pn)
        return [
            (module, self.carriers.get(module, self.carrier_ctx), group)
            for module, group in by_module.items()
        ]

    def _acquire(self, batch: Batch, needs: list[PhoneNumber], options: Options) -> None:
        """Acquire through the module named on each record, one call per module."""
        if options.dry_run or not needs:
            return
        for module, carrier, pns in self._by_carrier(needs):
            if carrier is None:
                for pn in pns:
                    batch.fail(pn.number, errors.carrier_not_found(module))
                continue
            for number, error in carrier.acquire_numbers(pns, options.request_id).items():
                batch.fail(number, error)
        batch.todo = [pn for pn in batch.todo if pn.number not in batch.failed]

    def _disconnect(self, batch: Batch, pns: list[PhoneNumber], options: Options) -> None:
        """Release upstream; a module knm does not know is tolerated, as in KAZOO."""
        if options.dry_run or not pns:
            return
        for _module, carrier, group in self._by_carrier(pns):
            if carrier is None:
                continue
            for number, error in carrier.disconnect_numbers(group, options.request_id).items():
                batch.fail(number, error)
        batch.todo = [pn for pn in batch.todo if pn.number not in batch.failed]

    # ================================================================== the state table
    def _through_table(
        self,
        batch: Batch,
        ctx: RunContext,
        event_of: Callable[[PhoneNumber], Event],
        target: NumberState | None = None,
        prepare: Setter | None = None,
    ) -> None:
        """Take every number through its row of the state table, each stage for the batch.

        ``prepare`` runs first on each number (the caller's option setters); then the row is
        admitted (guards), its ``before`` calls run, its effects apply, its ``after`` calls run
        (one carrier call per module), then its settling effects.
        """
        tctx = ctx.transitions
        taken: dict[str, Transition] = {}

        def admit(pn: PhoneNumber) -> None:
            if prepare is not None:
                prepare(pn)
            row = states.admit(event_of(pn), pn, tctx, target)
            if row is not None:
                taken[pn.number] = row

        def calls(pn: PhoneNumber, stage: str) -> tuple[Call, ...]:
            row = taken.get(pn.number)
            return () if row is None else getattr(row, stage)

        def before(pn: PhoneNumber) -> None:
            if Call.DEPROVISION in calls(pn, "before"):
                features.deprovision(pn, ctx.features)

        def apply(pn: PhoneNumber, *, settle: bool = False) -> None:
            if pn.number in taken:
                states.apply(taken[pn.number], pn, tctx, settle=settle)

        batch.step(admit)
        batch.step(before)
        batch.step(apply)
        buy = [pn for pn in batch.todo if Call.ACQUIRE in calls(pn, "after")]
        self._acquire(batch, buy, ctx.options)
        unassigned = [
            pn
            for pn in batch.todo
            if Call.DISCONNECT in calls(pn, "after") and pn.assigned_to is None
        ]
        self._disconnect(batch, unassigned, ctx.options)
        batch.step(partial(apply, settle=True))

    def _plan_target(self, target: NumberState) -> Plan:
        """Apply caller setters, then ``MOVE`` to ``target`` (acquiring where the row says)."""

        def plan(batch: Batch, ctx: RunContext) -> None:
            def setters(pn: PhoneNumber) -> None:
                self._apply_option_setters(pn, ctx.options)

            self._through_table(batch, ctx, lambda pn: Event.MOVE, target, setters)

        return plan

    def _can_create(self, ctx: RunContext) -> KnmError | None:
        """KAZOO's ``ensure_can_create``, checked for the whole batch first."""
        return states.creation_refusal(ctx.options, ctx.accounts, self.modules)

    def creation_module(self, options: Options) -> str:
        """The carrier module a new number gets (port_in and ported_in override the option)."""
        return states.creation_module(options, self.modules, self.settings.port_in_module_name)

    def _new_numbers(self, numbers: list[str], ctx: RunContext, batch: Batch) -> list[PhoneNumber]:
        """Records for numbers not in the store, refusing those in an active port request."""
        options = ctx.options
        porting = set() if options.ported_in else self.store.numbers_in_active_ports(numbers)
        module = self.creation_module(options)
        out: list[PhoneNumber] = []
        for number in numbers:
            if number in porting:
                batch.fail(number, errors.number_is_porting(number))
                continue
            pn = PhoneNumber.new(number, module, modules=self.modules)
            pn.ported_in = options.ported_in
            if options.public_fields:
                try:
                    pn.reset_public(options.public_fields)
                except KnmError as error:  # fields that cannot be stored
                    batch.fail(number, error)
                    continue
            out.append(pn)
        return out

    def _plan_create(self, batch: Batch, ctx: RunContext) -> None:
        """``CREATE`` new numbers in the creation state; a stored number must be one ``create``
        may take over, gets the option setters, then ``MOVE``s to that state."""
        options = ctx.options
        target = states.creation_state(options, self.modules)
        existing_opts = states.take_over_options(options, self.settings.port_in_module_name)

        def take_over(pn: PhoneNumber) -> None:
            if pn.stored:
                states.run(Event.TAKE_OVER, pn, ctx.transitions)
                self._apply_option_setters(pn, existing_opts)

        def event_of(pn: PhoneNumber) -> Event:
            return Event.MOVE if pn.stored else Event.CREATE

        batch.step(take_over)
        self._through_table(batch, ctx, event_of, target)

    def _discovered_numbers(
        self, numbers: list[str], ctx: RunContext, batch: Batch
    ) -> list[PhoneNumber]:
        """Numbers found by a recent search enter in ``discovery`` (``DISCOVER``), on the
        carrier that offered them; others are ``not_found``."""
        found = self.search_cache.discovered(numbers)
        out: list[PhoneNumber] = []
        for number in numbers:
            hit = found.get(number)
            if hit is None:
                batch.fail(number, errors.not_found())
                continue
            pn = PhoneNumber.new(number, hit.carrier_module, modules=self.modules)
            states.run(Event.DISCOVER, pn, ctx.transitions)
            pn.carrier_data = dict(hit.carrier_data)
            try:
                self._apply_option_setters(pn, ctx.options)
            except KnmError as error:  # fields that cannot be stored
                batch.fail(number, error)
                continue
            out.append(pn)
        return out

    def _plan_release(self, batch: Batch, ctx: RunContext) -> None:
        """``RELEASE``: the unwind of the reserve history, disconnect, then delete or age."""
        self._through_table(batch, ctx, lambda pn: Event.RELEASE)
