"""Shared pieces of the health tests: a settable clock and hand-built router configs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from google.protobuf.duration_pb2 import Duration

from llmroute_proto.v1 import config_pb2 as pb
from llmroute_sidecar.config.snapshot import Snapshot, build_snapshot


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def _seconds(value: float) -> Duration:
    duration = Duration()
    duration.FromNanoseconds(round(value * 1e9))
    return duration


def breaker(
    *,
    consecutive: int = 3,
    rate: float = 0.0,
    min_requests: int = 10,
    window: float = 10.0,
    cooldown: float = 5.0,
    max_ejected_percent: int = 50,
) -> pb.CircuitBreaker:
    return pb.CircuitBreaker(
        consecutive_failures=consecutive,
        failure_rate=rate,
        min_requests=min_requests,
        window=_seconds(window),
        cooldown=_seconds(cooldown),
        max_ejected_percent=max_ejected_percent,
    )


def config(
    models: Mapping[str, Sequence[str]],
    *,
    circuit: pb.CircuitBreaker | None = None,
    budget: float | None = 0.2,
    endpoints: dict[str, str] | None = None,
    route: str = "r",
    version: str = "v1",
) -> pb.RouterConfig:
    """One route whose models use the named backends (openai-compatible, no credentials)."""
    names = sorted({name for backends in models.values() for name in backends})
    resilience = pb.Resilience(circuit_breaker=circuit or breaker())
    if budget is not None:
        resilience.retries.budget_fraction = budget
    return pb.RouterConfig(
        version=version,
        routes=[
            pb.Route(
                name=route,
                namespace="ns",
                models=[pb.LogicalModel(name=model, backends=list(bs)) for model, bs in models.items()],
                backends=[
                    pb.Backend(
                        name=name,
                        provider=pb.PROVIDER_OPENAI_COMPATIBLE,
                        model="m",
                        endpoint=(endpoints or {}).get(name, f"http://{name}.invalid/v1"),
                    )
                    for name in names
                ],
                resilience=resilience,
            )
        ],
    )


def snapshot(models: Mapping[str, Sequence[str]], **kwargs: object) -> Snapshot:
    return build_snapshot(config(models, **kwargs))  # type: ignore[arg-type]
