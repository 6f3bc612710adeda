"""``llmroute-fake-provider``: run one fake provider from the command line.

Neighbours: wraps ``server.FakeProvider``; the fault flags build a ``faults.FaultPolicy``, the
default for every request (a request's ``x-fake-fault`` header still overrides it). Prints the URL
on stdout once the port is bound, so scripts can wait for that line; runs until SIGINT/SIGTERM.

    llmroute-fake-provider --protocol anthropic --port 8081 --latency-ms 50 \\
        --fail-rate 0.3 --fail-status 503 --retry-after 2 --seed 7
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from collections.abc import Callable

from .faults import FaultPolicy, FaultSpec, FaultSyntaxError, parse_faults
from .protocols import PROTOCOLS
from .server import FakeProvider

__all__ = ["build_parser", "main"]

_FAIL_MODES = {
    "status": lambda status: FaultSpec(status=status),
    "reset": lambda status: FaultSpec(reset=True),
    "hang": lambda status: FaultSpec(hang=True),
    "cut": lambda status: FaultSpec(cut_after=1),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="llmroute-fake-provider",
        description="A fake LLM provider speaking a real provider's wire protocol, with fault knobs.",
    )
    parser.add_argument("--protocol", required=True, choices=sorted(PROTOCOLS))
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    parser.add_argument("--port", type=int, default=0, help="port to bind (default: an ephemeral one)")
    parser.add_argument("--api-key", help="accept only this key (default: any non-empty key)")
    parser.add_argument("--aws-access-key-id", help="bedrock: verify SigV4 signatures made with this key ...")
    parser.add_argument("--aws-secret-access-key", help="... and this secret")
    parser.add_argument(
        "--model", action="append", default=[], help="a model the listing endpoints show (repeatable)"
    )
    parser.add_argument("--access-log", action="store_true", help="log every request to stderr")

    faults = parser.add_argument_group("default faults (a request's x-fake-fault header overrides them)")
    faults.add_argument(
        "--fault", default="", help="knobs in header syntax, e.g. 'latency_ms=20,slow_stream_ms=5'"
    )
    faults.add_argument("--latency-ms", type=int, help="delay before the response headers")
    faults.add_argument("--slow-stream-ms", type=int, help="delay between stream chunks")
    faults.add_argument("--cut-after", type=int, help="close streams abruptly after N chunks")
    faults.add_argument(
        "--truncate-after", type=int, help="end streams after N chunks without the terminal event"
    )
    faults.add_argument("--error-event", type=int, help="send the provider's in-stream error after N chunks")
    faults.add_argument("--status", type=int, help="answer every request with this error status")
    faults.add_argument("--retry-after", type=float, help="retry-after seconds on error answers")
    faults.add_argument("--fail-rate", type=float, default=0.0, help="probability of a random failure (0..1)")
    faults.add_argument(
        "--fail-status", type=int, default=503, help="status of random failures (default 503)"
    )
    faults.add_argument(
        "--fail-mode", choices=sorted(_FAIL_MODES), default="status", help="kind of random failure"
    )
    faults.add_argument("--seed", type=int, help="seed for reproducible random failures")
    return parser


def policy_from_args(args: argparse.Namespace) -> FaultPolicy:
    flags = FaultSpec(
        latency_ms=args.latency_ms,
        slow_stream_ms=args.slow_stream_ms,
        cut_after=args.cut_after,
        truncate_after=args.truncate_after,
        error_event=args.error_event,
        status=args.status,
        retry_after=args.retry_after,
    )
    for name, value in (("--status", args.status), ("--fail-status", args.fail_status)):
        if value is not None and not 400 <= value <= 599:
            raise FaultSyntaxError(f"{name} must be an error status (400..599)")
    return FaultPolicy(
        defaults=flags.over(parse_faults(args.fault)),
        fail_rate=args.fail_rate,
        failure=_FAIL_MODES[args.fail_mode](args.fail_status),
        seed=args.seed,
    )


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``llmroute-fake-provider``."""
    parser = build_parser()
    args = parser.parse_args(argv)
    credentials = None
    if args.aws_access_key_id or args.aws_secret_access_key:
        if not (args.aws_access_key_id and args.aws_secret_access_key):
            parser.error("--aws-access-key-id and --aws-secret-access-key go together")
        credentials = {args.aws_access_key_id: args.aws_secret_access_key}
    try:
        fake = FakeProvider(
            args.protocol,
            host=args.host,
            port=args.port,
            faults=policy_from_args(args),
            api_key=args.api_key,
            aws_credentials=credentials,
            models=args.model,
            access_log=args.access_log,
        )
    except ValueError as exc:  # FaultSyntaxError included
        parser.error(str(exc))
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        runner.run(_serve(fake))
    return 0


async def _serve(fake: FakeProvider) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):  # not on Windows
            loop.add_signal_handler(signum, stop.set)
    async with fake:
        print(fake.url, flush=True)
        print(
            f"llmroute-fake-provider: {fake.protocol.name} serving on {fake.url}", file=sys.stderr, flush=True
        )
        await stop.wait()


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    # uvloop where available: benchmarks point thousands of streams at a fake.
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


if __name__ == "__main__":
    raise SystemExit(main())
