"""Where a server's CPU goes under load: py-spy samples, folded into functions and components.

``record()`` drives 64-way closed-loop load at one server while ``py-spy record --format raw``
(non-blocking, so it barely slows the target) samples it, and reads the server's CPU time over the
same window. The collapsed stacks are reduced to self time per function, self time per component
(aiohttp server, aiohttp client, httpx stack, event loop, sidecar modules, metrics, ...) and
inclusive time of the sidecar's own functions (found by file, so refactors need no update here).
Shares are of the samples where the process was running (py-spy leaves idle samples out); times
in µs per request are those shares of the measured CPU per request. Python's garbage collector has
no frame of its own: its pauses are charged to whatever function allocated when it ran.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

from . import loadgen
from .procs import cpu_seconds

__all__ = ["component", "fold", "markdown", "record"]

Json = dict[str, Any]

# First match wins: (substring of the frame's file, component).
_COMPONENTS = [
    ("llmroute_sidecar/openai_api/", "sidecar: request validation"),
    ("llmroute_sidecar/http_front", "sidecar: HTTP front"),
    ("llmroute_sidecar/web/", "sidecar: HTTP server (web/)"),
    ("llmroute_sidecar/adapters/", "sidecar: provider adapter"),
    ("llmroute_sidecar/metrics", "sidecar: metrics"),
    ("llmroute_sidecar/usage", "sidecar: usage records"),
    ("llmroute_sidecar/upstream", "sidecar: upstream client glue"),
    ("llmroute_sidecar/", "sidecar: routing, attempts, service"),
    ("prometheus_client/", "prometheus_client"),
    ("aiohttp/client", "aiohttp client"),
    ("aiohttp/connector", "aiohttp client"),
    ("aiohttp/web", "aiohttp server"),
    ("aiohttp/", "aiohttp (shared: streams, parser, writer, helpers)"),
    ("multidict/", "aiohttp (shared: streams, parser, writer, helpers)"),
    ("yarl/", "yarl (URLs)"),
    ("httpx/", "httpx stack"),
    ("httpcore/", "httpx stack"),
    ("h11/", "httpx stack"),
    ("anyio/", "httpx stack"),
    ("sniffio/", "httpx stack"),
    ("asyncio/", "event loop (uvloop + asyncio; native I/O shows as Runner.run)"),
    ("uvloop/", "event loop (uvloop + asyncio; native I/O shows as Runner.run)"),
    ("uuid", "uuid"),
    ("logging/", "logging"),
    ("dataclasses", "dataclasses"),
    ("typing", "typing"),
    ("enum", "enum"),
]


def component(frame: str) -> str:
    for needle, name in _COMPONENTS:
        if needle in frame:
            return name
    return "other"


def _file(frame: str) -> str:
    return frame[frame.rfind("(") + 1 : -1] if frame.endswith(")") else ""


def _name(frame: str) -> str:
    return frame.split(" (", 1)[0]


def fold(collapsed: str) -> Json:
    """Self and inclusive shares from py-spy's raw (collapsed) output."""
    self_time: Counter[str] = Counter()
    components: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in collapsed.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [f for f in stack.split(";") if "(" in f]
        if not frames:
            continue
        total += count
        leaf = frames[-1]
        self_time[leaf] += count
        components[component(leaf)] += count
        for frame in {f for f in frames if "llmroute_sidecar/" in _file(f)}:
            inclusive[frame] += count
    share = (lambda n: round(n / total, 4)) if total else (lambda n: 0.0)
    return {
        "samples": total,
        "components": {k: share(v) for k, v in components.most_common()},
        "top_self": [[k, share(v)] for k, v in self_time.most_common(25)],
        "sidecar_inclusive": [[k, share(v)] for k, v in inclusive.most_common(20)],
    }


async def record(pid: int, port: int, *, seconds: float, core: int) -> Json:
    """Profile ``pid`` for ``seconds`` under 64-way load on ``port``; returns the folded profile."""
    spy = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))
    if spy is None:
        return {"error": "py-spy is not installed (pip install py-spy)"}
    with tempfile.TemporaryDirectory(prefix="llmroute-prof-") as tmp:
        out = Path(tmp) / "profile.txt"
        process = await asyncio.create_subprocess_exec(
            spy, "record", "--pid", str(pid), "--duration", str(int(seconds)), "--rate", "400",
            "--format", "raw", "--nolineno", "--nonblocking", "--output", str(out),
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
            preexec_fn=lambda: os.sched_setaffinity(0, {core}),
        )  # fmt: skip
        cpu: list[float] = []
        load = await loadgen.run_load(
            "127.0.0.1", port, concurrency=64, seconds=seconds, warmup=0.5,
            on_window=lambda _opening: cpu.append(cpu_seconds(pid)),
        )  # fmt: skip
        try:
            _, stderr = await asyncio.wait_for(process.communicate(), timeout=30)
        except TimeoutError:
            process.kill()
            return {"error": "py-spy did not finish"}
        if process.returncode != 0 or not out.exists():
            return {"error": f"py-spy failed: {stderr.decode(errors='replace')[-500:]}"}
        folded = fold(out.read_text())
    folded["rps_while_profiling"] = round(load.rps)
    requests = len(load.latencies_ns)
    folded["cpu_us_per_request"] = round((cpu[-1] - cpu[0]) / requests * 1e6, 1) if requests else None
    top = list(folded["components"].items())[:3]
    folded["summary_line"] = ", ".join(f"{k} {v:.0%}" for k, v in top)
    return folded


def markdown(target: str, prof: Json, *, cpu_us_per_request: float | None = None) -> str:
    """Tables of one profile; µs/req charges the shares to ``cpu_us_per_request`` if given."""
    if "error" in prof:
        return f"profile of {target}: {prof['error']}\n"
    cpu = cpu_us_per_request or prof.get("cpu_us_per_request")

    def _us(share: float, _prof: Json) -> str:
        return f"{share * cpu:.0f}" if cpu else "n/a"

    lines = [
        f"**Profile of {target}** ({prof['samples']} samples at c=64; {prof['rps_while_profiling']} req/s and "
        f"{prof.get('cpu_us_per_request')} µs CPU/req while sampled; µs/req below are shares of {cpu:.0f} µs)",
        "",
        "| component (self time) | share | µs/req |",
        "| --- | --: | --: |",
    ]
    lines += [f"| {k} | {v:.1%} | {_us(v, prof)} |" for k, v in prof["components"].items() if v >= 0.005]
    if prof.get("sidecar_inclusive"):
        lines += ["", "| sidecar function (inclusive) | share | µs/req |", "| --- | --: | --: |"]
        lines += [f"| `{k}` | {v:.1%} | {_us(v, prof)} |" for k, v in prof["sidecar_inclusive"][:15]]
    lines += ["", "| function (self time) | share | µs/req |", "| --- | --: | --: |"]
    lines += [f"| `{k}` | {v:.1%} | {_us(v, prof)} |" for k, v in prof["top_self"][:15]]
    return "\n".join(lines) + "\n"
