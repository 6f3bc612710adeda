"""Experiments, cluster-wide: the arms of every ``LLMRoute`` with ``spec.experiment``, counted from the
sidecars' usage records into ``status.experiment``.

Sidecars tag each usage record of the experiment's model with the arm the user was assigned
(``experiment_arm``) and send feedback scores as records of outcome FEEDBACK, on the same usage
stream as everything else. The budget service receives every batch once (it de-duplicates batches by
sequence and records by request id) and hands the fresh records to :meth:`ExperimentService.count`,
a ``budgets.UsageConsumer``; the batch is acknowledged to the sidecar only after the counts it added
were written (:meth:`persisted`), and ``status.experiment.countedUsage`` holds, in the same write as
the counts, the last batch of each sidecar they include, so a batch sent again after an operator
restart is never counted twice (the budgets' scheme, ``budgets/ledger.py`` ``CountedBatches``).

The statistics are ``stats.py``'s. The verdict sticks once called (an Event ``ExperimentConcluded``
says so) until the arms or the decision settings change; a change of model or arms starts the
counts over. Only the leader counts and writes, like budgets. Neighbours: ``handlers/routes.py``
(the RouteBook this reads specs and stored status from), ``app.py`` (composition).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from pydantic import ValidationError

from llmroute_proto.api.budget import CountedUsage
from llmroute_proto.api.route import ArmStatus, ArmTotals, Experiment, ExperimentStatus, LLMRoute
from llmroute_proto.v1 import usage_pb2 as upb

from ..budgets.ledger import CountedBatches, from_micro
from .stats import BUCKETS_MS, Arm, Histogram, Moments, Verdict, decide

__all__ = ["ExperimentService", "RouteEntries"]

log = logging.getLogger(__name__)
Key = tuple[str, str]
#: Acknowledgement keys are (namespace, "llmroute/<name>"): a budget's name cannot hold a slash, so
#: they never collide with the budget service's own (namespace, name) keys.
_KEY_PREFIX = "llmroute/"
_COUNTED_AS_ERROR = frozenset({upb.USAGE_OUTCOME_UPSTREAM_ERROR, upb.USAGE_OUTCOME_TIMEOUT})
_COUNTED = _COUNTED_AS_ERROR | {upb.USAGE_OUTCOME_SUCCESS, upb.USAGE_OUTCOME_CANCELLED}
Persist = Callable[[str, str, dict[str, Any] | None], Awaitable[None]]  # None: remove it
Announce = Callable[[Mapping[str, Any], str, str], Awaitable[None]]  # (involved, reason, message)


class _Entry(Protocol):
    route: LLMRoute | None
    status: dict[str, Any]

    def involved(self) -> dict[str, Any]: ...


class RouteEntries(Protocol):
    """What the service reads of ``handlers/routes.py``'s RouteBook."""

    def entry(self, namespace: str, name: str) -> _Entry | None: ...


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class _Experiment:
    key: Key  # (namespace, route)
    spec: Experiment
    signature: str
    arms: dict[str, Arm]
    counted: CountedBatches = field(default_factory=CountedBatches)
    started_at: datetime = field(default_factory=_utcnow)
    verdict: Verdict = field(default_factory=lambda: Verdict(None, None, None, "no samples yet"))
    concluded_at: datetime | None = None
    decided_with: tuple[str, int, float] | None = None  # the settings the sticky verdict was called with
    revision: int = 1  # the first write records that counting began
    persisted: int = 0
    announced: bool = False

    @property
    def settings(self) -> tuple[str, int, float]:
        return (self.spec.metric, self.spec.min_samples, self.spec.confidence)


def _arms_of(route: LLMRoute) -> tuple[Experiment, list[str]] | None:
    experiment = route.spec.experiment
    if experiment is None:
        return None
    model = next((m for m in route.spec.models if m.name == experiment.model), None)
    if model is None or not model.split:
        return None  # the admission rules refuse this; a route read from elsewhere may still say it
    return experiment, [s.backend for s in model.split]


def _signature(model: str, arms: Sequence[str]) -> str:
    text = f"{model}:{'+'.join(arms)}"
    if len(text) <= 128:
        return text
    return f"{model[:40]}:sha256-{hashlib.sha256(text.encode()).hexdigest()[:32]}"


class ExperimentService:
    """Counts usage records into experiments and writes ``status.experiment``; a ``UsageConsumer``."""

    def __init__(
        self,
        *,
        routes: RouteEntries,
        persist: Persist | None = None,
        announce: Announce | None = None,
        is_leader: Callable[[], bool] = lambda: True,
        clock: Callable[[], datetime] = _utcnow,
        persist_interval: float = 0.5,
    ) -> None:
        self._routes = routes
        self._persist = persist
        self._announce = announce
        self._is_leader = is_leader
        self._clock = clock
        self._interval = persist_interval
        self._experiments: dict[Key, _Experiment] = {}
        self._stale: set[Key] = set()  # routes whose status.experiment is to be removed
        self._written: Callable[[], None] = lambda: None
        self.counted_records = 0
        self.recounts_refused = 0

    def on_written(self, callback: Callable[[], None]) -> None:
        """``callback()`` after a write, so the budget service can release acknowledgements."""
        self._written = callback

    # -- the usage consumer ---------------------------------------------------------------------------

    def count(
        self,
        namespace: str,
        instance: str,
        sequence: int,
        records: Sequence[upb.UsageRecord],
        now: datetime,
    ) -> dict[Key, int]:
        """Count the fresh records of one batch; returns the keys (with the revision that holds the
        counts) whose write the batch's acknowledgement waits for."""
        touched: dict[Key, _Experiment] = {}
        skipped: set[Key] = set()
        for record in records:
            if not record.experiment_arm:
                continue
            key = (namespace, record.route)
            if key in skipped:
                continue
            experiment = touched.get(key) or self._tracked(key)
            if experiment is None:
                skipped.add(key)
                continue
            if key not in touched and experiment.counted.includes(instance, sequence):
                self.recounts_refused += 1  # counted and written by an earlier leader
                skipped.add(key)
                continue
            arm = experiment.arms.get(record.experiment_arm)
            if arm is None:
                continue  # an arm the split no longer has (the sidecar ran an older config)
            if _add(arm, record):
                touched[key] = experiment
                self.counted_records += 1
        waits: dict[Key, int] = {}
        for key, experiment in touched.items():
            experiment.counted.record(instance, sequence, now)
            experiment.revision += 1
            self._judge(experiment, now)
            waits[(key[0], _KEY_PREFIX + key[1])] = experiment.revision
        return waits

    def persisted(self, key: Key) -> int | None:
        """The last written revision of an acknowledgement key of ours; None for anyone else's."""
        if not key[1].startswith(_KEY_PREFIX):
            return None
        experiment = self._experiments.get((key[0], key[1][len(_KEY_PREFIX) :]))
        return experiment.persisted if experiment is not None else 1 << 62  # gone: nothing to wait for

    def reset(self) -> None:
        """Forget everything (this replica stopped leading); the next leader reads status."""
        self._experiments.clear()
        self._stale.clear()

    # -- state ----------------------------------------------------------------------------------------

    def _tracked(self, key: Key) -> _Experiment | None:
        entry = self._routes.entry(*key)
        found = _arms_of(entry.route) if entry is not None and entry.route is not None else None
        if entry is None or found is None:
            self._experiments.pop(key, None)
            return None
        spec, arms = found
        signature = _signature(spec.model, arms)
        current = self._experiments.get(key)
        if current is not None and current.signature == signature:
            current.spec = spec
            return current
        experiment = _seeded(key, spec, signature, arms, entry.status.get("experiment"), self._clock())
        if current is not None:
            log.info("experiment of route %s/%s: the arms changed, counting starts over", *key)
        self._experiments[key] = experiment
        return experiment

    def _judge(self, experiment: _Experiment, now: datetime) -> None:
        if experiment.verdict.winner is not None and experiment.decided_with == experiment.settings:
            return  # called: it sticks until the settings change
        spec = experiment.spec
        verdict = decide(
            list(experiment.arms.values()),
            spec.metric,
            min_samples=spec.min_samples,
            confidence=spec.confidence,
        )
        experiment.verdict = verdict
        if verdict.winner is not None:
            experiment.decided_with = experiment.settings
            experiment.concluded_at = now
            experiment.announced = False
        else:
            experiment.concluded_at = None

    def refresh(self, namespace: str, name: str) -> None:
        """Follow a spec change (new settings, arms or no experiment) without waiting for a record."""
        key = (namespace, name)
        entry = self._routes.entry(*key)
        if entry is not None and entry.route is not None and entry.route.spec.experiment is None:
            self._experiments.pop(key, None)
            if entry.status.get("experiment") is not None:
                self._stale.add(key)  # the experiment was removed: so is its status
            return
        if key not in self._experiments:
            return
        experiment = self._tracked(key)
        if experiment is not None and experiment.decided_with not in (None, experiment.settings):
            self._judge(experiment, self._clock())
            experiment.revision += 1

    # -- status ---------------------------------------------------------------------------------------

    def report(self, namespace: str, name: str) -> dict[str, Any] | None:
        """``status.experiment`` as it should read now; None when the route has none being counted."""
        experiment = self._experiments.get((namespace, name))
        if experiment is None:
            return None
        return _status(experiment, self._clock()).to_wire() | _cleared(experiment)

    async def persist_now(self) -> None:
        if self._persist is None or not self._is_leader():
            return
        wrote = False
        for key in list(self._stale):
            try:
                await self._persist(key[0], key[1], None)
            except Exception as exc:
                log.warning("route %s/%s: removing status.experiment failed (will retry): %s", *key, exc)
                continue
            self._stale.discard(key)
        for key, experiment in list(self._experiments.items()):
            if experiment.persisted == experiment.revision:
                continue
            if self._routes.entry(*key) is None:
                del self._experiments[key]  # the route was deleted: nothing left to write to
                wrote = True
                continue
            revision = experiment.revision
            body = self.report(*key)
            if body is None:
                continue
            try:
                await self._persist(key[0], key[1], body)
            except Exception as exc:
                log.warning("experiment of route %s/%s: status write failed (will retry): %s", *key, exc)
                continue
            experiment.persisted = max(experiment.persisted, revision)
            wrote = True
            await self._announce_verdict(key, experiment)
        if wrote:
            self._written()

    async def _announce_verdict(self, key: Key, experiment: _Experiment) -> None:
        verdict = experiment.verdict
        if verdict.winner is None or experiment.announced or self._announce is None:
            return
        experiment.announced = True
        entry = self._routes.entry(*key)
        if entry is None:
            return
        try:
            await self._announce(entry.involved(), "ExperimentConcluded", _conclusion(experiment))
        except Exception as exc:
            log.warning("experiment of route %s/%s: the Event failed: %s", *key, exc)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.persist_now()
            except Exception:
                log.exception("writing experiment status failed")


def _add(arm: Arm, record: upb.UsageRecord) -> bool:
    """Count one record into its arm; False when it is not something the experiment counts."""
    outcome = record.outcome
    if outcome == upb.USAGE_OUTCOME_FEEDBACK:
        score = record.feedback_score
        if score != score or abs(score) == float("inf"):
            return False  # the sidecar refuses these; a hostile stream must not poison the mean
        arm.quality.add(score)
        return True
    if outcome not in _COUNTED:
        return False  # a policy refusal says nothing about the arm
    arm.requests += 1
    arm.cost.add(record.cost_micro_usd / 1e6)
    if outcome in _COUNTED_AS_ERROR:
        arm.errors += 1
    elif outcome == upb.USAGE_OUTCOME_SUCCESS:
        seconds = record.latency.ToTimedelta().total_seconds()
        arm.latency.add(seconds)
        arm.latency_ms.add(seconds * 1000)
        if record.HasField("time_to_first_token"):
            ttft = record.time_to_first_token.ToTimedelta().total_seconds()
            arm.ttft.add(ttft)
            arm.ttft_ms.add(ttft * 1000)
    return True


def _seeded(
    key: Key, spec: Experiment, signature: str, arms: Sequence[str], stored: Any, now: datetime
) -> _Experiment:
    """A new experiment, continuing from the stored status when it describes the same arms."""
    experiment = _Experiment(key, spec, signature, {name: Arm(name) for name in arms}, started_at=now)
    if not isinstance(stored, dict):
        return experiment
    try:
        status = ExperimentStatus.model_validate(stored)
    except ValidationError as exc:
        log.warning("route %s/%s: status.experiment is unreadable, counting starts over: %s", *key, exc)
        return experiment
    if status.signature != signature or list(status.buckets_ms) != list(BUCKETS_MS):
        return experiment
    for arm_status in status.arms:
        arm = experiment.arms.get(arm_status.backend)
        if arm is not None:
            _restore(arm, arm_status)
    for entry in status.counted_usage or ():
        experiment.counted.record(entry.sidecar, entry.sequence, entry.at)
    experiment.started_at = status.started_at or now
    if status.state == "Concluded" and status.winner in experiment.arms:
        experiment.verdict = Verdict(status.winner, status.winner, status.p_value, "concluded")
        experiment.concluded_at = status.concluded_at
        experiment.decided_with = experiment.settings
        experiment.announced = True
    else:
        experiment.verdict = decide(
            list(experiment.arms.values()),
            spec.metric,
            min_samples=spec.min_samples,
            confidence=spec.confidence,
        )
    experiment.revision = experiment.persisted = 0
    return experiment


def _restore(arm: Arm, status: ArmStatus) -> None:
    totals = status.totals
    arm.requests, arm.errors = status.requests, min(status.errors, status.requests)
    arm.latency, arm.ttft = Moments.from_list(totals.latency), Moments.from_list(totals.ttft)
    arm.cost, arm.quality = Moments.from_list(totals.cost), Moments.from_list(totals.quality)
    arm.latency_ms = Histogram.from_list(totals.latency_buckets)
    arm.ttft_ms = Histogram.from_list(totals.ttft_buckets)


def _status(experiment: _Experiment, now: datetime) -> ExperimentStatus:
    spec, verdict = experiment.spec, experiment.verdict
    concluded = verdict.winner is not None
    experiment.counted.prune(now)
    return ExperimentStatus(
        model=spec.model,
        metric=spec.metric,
        state="Concluded" if concluded else "Running",
        winner=verdict.winner,
        p_value=None if verdict.p_value is None else min(1.0, max(0.0, verdict.p_value)),
        summary=_summary(experiment)[:256],
        started_at=experiment.started_at,
        concluded_at=experiment.concluded_at if concluded else None,
        signature=experiment.signature,
        buckets_ms=list(BUCKETS_MS),
        arms=[_arm_status(arm, spec) for arm in experiment.arms.values()],
        counted_usage=[
            CountedUsage(sidecar=sidecar, sequence=sequence, at=at)
            for sidecar, (sequence, at) in sorted(experiment.counted.last.items())
        ]
        or None,
    )


def _cleared(experiment: _Experiment) -> dict[str, Any]:
    """Explicit nulls for what a merge patch must remove (a verdict that no longer holds)."""
    if experiment.verdict.winner is not None:
        return {}
    return {"winner": None, "concludedAt": None} | (
        {"pValue": None} if experiment.verdict.p_value is None else {}
    )


def _rounded(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(value, digits)


def _arm_status(arm: Arm, spec: Experiment) -> ArmStatus:
    sample = arm.metric(spec.metric)
    interval = sample.interval(spec.confidence)
    return ArmStatus(
        backend=arm.backend,
        requests=arm.requests,
        errors=arm.errors,
        error_rate=round(arm.errors / arm.requests, 6) if arm.requests else 0.0,
        latency_p50_ms=_rounded(arm.latency_ms.quantile(0.5), 1),
        latency_p95_ms=_rounded(arm.latency_ms.quantile(0.95), 1),
        latency_p99_ms=_rounded(arm.latency_ms.quantile(0.99), 1),
        ttft_p50_ms=_rounded(arm.ttft_ms.quantile(0.5), 1),
        ttft_p95_ms=_rounded(arm.ttft_ms.quantile(0.95), 1),
        cost_usd=from_micro(round(arm.cost.total * 1_000_000)),
        feedback=int(arm.quality.n),
        quality=_rounded(arm.quality.mean),
        mean=_rounded(sample.mean, 6),
        low=_rounded(interval[0], 6) if interval is not None else None,
        high=_rounded(interval[1], 6) if interval is not None else None,
        totals=ArmTotals(
            latency=arm.latency.to_list(),
            ttft=arm.ttft.to_list(),
            cost=arm.cost.to_list(),
            quality=arm.quality.to_list(),
            latency_buckets=list(arm.latency_ms.counts),
            ttft_buckets=list(arm.ttft_ms.counts),
        ),
    )


def _summary(experiment: _Experiment) -> str:
    spec, verdict = experiment.spec, experiment.verdict
    if verdict.winner is not None:
        p = f" (p={verdict.p_value:.2g})" if verdict.p_value is not None else ""
        return f"{verdict.winner} wins on {spec.metric}{p}"
    samples = min(int(arm.metric(spec.metric).n) for arm in experiment.arms.values())
    if samples < spec.min_samples:
        leads = f", {verdict.leader} leads" if verdict.leader else ""
        return f"Running: {samples}/{spec.min_samples} samples{leads}"
    p = f" (p={verdict.p_value:.2g})" if verdict.p_value is not None else ""
    return f"Running: {verdict.leader} leads on {spec.metric}{p}, not significant"


def _conclusion(experiment: _Experiment) -> str:
    spec, verdict = experiment.spec, experiment.verdict
    parts = []
    for arm in experiment.arms.values():
        sample = arm.metric(spec.metric)
        mean = f"{sample.mean:.4g}" if sample.mean is not None else "-"
        parts.append(f"{arm.backend} {mean} over {int(sample.n)}")
    p = f"{verdict.p_value:.2g}" if verdict.p_value is not None else "?"
    return (
        f"experiment on model {spec.model}: arm {verdict.winner} wins on {spec.metric} "
        f"({'; '.join(parts)}; p={p} at confidence {spec.confidence})"
    )
