"""``FakeProvider``: the in-process handle tests and benchmarks use to run one fake provider.

Neighbours: ``app`` builds the aiohttp application; ``protocols`` maps names to protocol classes;
``faults`` supplies the policy. ``__main__`` wraps the same class for the command line.

Two ways to run it:

- ``async with FakeProvider("anthropic") as fake:`` serves on the running event loop (for async
  clients and the sidecar's own tests);
- ``with FakeProvider("bedrock") as fake:`` serves from a background thread with its own loop, so
  that blocking clients such as the official SDKs can call it from the test's thread.

Either way it binds an ephemeral loopback port by default, records every request in ``.requests``,
and takes default faults from ``set_faults`` and one-shot faults from ``queue_faults``.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Mapping, Sequence
from types import TracebackType

from aiohttp import web
from aiohttp.log import access_logger

from .app import make_app
from .faults import FaultPlan, FaultPolicy, FaultSpec, parse_faults
from .protocol import FakeConfig, FakeState, RecordedRequest
from .protocols import make_protocol

__all__ = ["FakeProvider"]

# Streams in flight when the fake stops are cut rather than waited for: tests want a quick stop.
_SHUTDOWN_TIMEOUT_S = 0.5
_THREAD_START_TIMEOUT_S = 10.0


class FakeProvider:
    """One fake provider server speaking ``protocol`` (see ``protocols.PROTOCOLS``)."""

    def __init__(
        self,
        protocol: str,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        faults: FaultPolicy | FaultSpec | str | None = None,
        api_key: str | None = None,
        aws_credentials: Mapping[str, str] | None = None,
        models: Sequence[str] = (),
        access_log: bool = False,
    ) -> None:
        self.protocol = make_protocol(protocol)
        self._host = host
        self._port = port
        self._access_log = access_log
        config = FakeConfig(api_key=api_key, aws_credentials=aws_credentials, models=tuple(models))
        self._state = FakeState(protocol=protocol, config=config, plan=FaultPlan(_as_policy(faults)))
        self._runner: web.AppRunner | None = None
        self._bound_port: int | None = None
        self._thread: threading.Thread | None = None
        self._thread_loop: asyncio.AbstractEventLoop | None = None

    # --- what tests read ---

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request that reached the fake, oldest first (including refused and faulted ones)."""
        return self._state.requests

    @property
    def port(self) -> int:
        if self._bound_port is None:
            raise RuntimeError("the fake provider is not running")
        return self._bound_port

    @property
    def url(self) -> str:
        """The server's root URL, e.g. ``http://127.0.0.1:40123``."""
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{self.port}"

    @property
    def base_url(self) -> str:
        """The base URL the provider's official SDK takes (``.../v1`` for OpenAI, the root otherwise)."""
        return self.url + self.protocol.sdk_path

    # --- faults ---

    def set_faults(
        self,
        defaults: FaultSpec | str | None = None,
        *,
        fail_rate: float = 0.0,
        failure: FaultSpec | str | None = None,
        seed: int | None = None,
    ) -> None:
        """Replace the default faults of every request (``None`` and no rate: no faults)."""
        policy = FaultPolicy(
            defaults=_as_spec(defaults),
            fail_rate=fail_rate,
            failure=_as_spec(failure) if failure is not None else FaultSpec(status=503),
            seed=seed,
        )
        self._state.plan.policy = policy

    def queue_faults(self, *specs: FaultSpec | str) -> None:
        """One spec for each of the next requests, in order of arrival (``"none"`` for a clean one)."""
        self._state.plan.queue(*(_as_spec(spec) for spec in specs))

    def clear(self) -> None:
        """Forget recorded requests and queued faults (the default faults stay)."""
        self._state.requests.clear()
        self._state.plan.clear_queue()

    # --- running on the caller's event loop ---

    async def start(self) -> None:
        if self._runner is not None:
            raise RuntimeError("the fake provider is already running")
        self._state.closing = asyncio.Event()
        runner = web.AppRunner(
            make_app(self.protocol, self._state),
            handle_signals=False,
            access_log=access_logger if self._access_log else None,
            handler_cancellation=True,
            shutdown_timeout=_SHUTDOWN_TIMEOUT_S,
        )
        await runner.setup()
        try:
            await web.TCPSite(runner, self._host, self._port, backlog=1024).start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self._bound_port = int(runner.addresses[0][1])

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is None:
            return
        self._state.closing.set()
        await runner.cleanup()
        self._bound_port = None

    async def __aenter__(self) -> FakeProvider:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    # --- running in a thread, for blocking clients ---

    def start_in_thread(self) -> None:
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name=f"fake-{self.protocol.name}", daemon=True)
        thread.start()
        try:
            asyncio.run_coroutine_threadsafe(self.start(), loop).result(_THREAD_START_TIMEOUT_S)
        except BaseException:
            loop.call_soon_threadsafe(loop.stop)
            thread.join()
            loop.close()
            raise
        self._thread, self._thread_loop = thread, loop

    def stop_thread(self) -> None:
        thread, loop = self._thread, self._thread_loop
        if thread is None or loop is None:
            return
        try:
            asyncio.run_coroutine_threadsafe(self.stop(), loop).result(_THREAD_START_TIMEOUT_S)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join()
            loop.close()
            self._thread = self._thread_loop = None

    def __enter__(self) -> FakeProvider:
        self.start_in_thread()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop_thread()


def _as_spec(spec: FaultSpec | str | None) -> FaultSpec:
    if spec is None:
        return FaultSpec()
    return parse_faults(spec) if isinstance(spec, str) else spec


def _as_policy(faults: FaultPolicy | FaultSpec | str | None) -> FaultPolicy:
    if isinstance(faults, FaultPolicy):
        return faults
    return FaultPolicy(defaults=_as_spec(faults))
