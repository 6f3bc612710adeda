# ruff: noqa: RUF001  (the page is prose, with typographic signs on purpose)
"""``python -m bench.peers --render JSON``: plots and ``docs/performance.md`` from a peers run's JSON.

Every figure on the page comes from the JSON (through ``analysis.summarize``); the method and the
caveats are written here with the run's own plan values; the older sections the page keeps (the
httpx verdict, the profile, the optimisation candidates, the other benches) are in
``page_history.md`` beside this file, labelled as history, and appended as they are.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from . import analysis, plots

__all__ = ["markdown_page", "render"]

Json = dict[str, Any]
ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "performance.md"
HISTORY = Path(__file__).with_name("page_history.md")
NAMES = {
    "direct": "direct (the mock)",
    "passthrough": "floor (passthrough)",
    "sidecar": "**sidecar**",
    "litellm": "LiteLLM proxy",
}


def _f(value: Any, digits: int = 2, unit: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, float) and abs(value) >= 100 and digits <= 2:
        return f"{value:,.0f}{unit}"
    return f"{value:,.{digits}f}{unit}"


def _x(value: Any) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.2f}×"


def _pct(value: Any) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.1%}"


def _met(met: bool | None) -> str:
    return {True: "met", False: "**not met**", None: "n/a"}[met]


def _targets_table(rows: list[Json]) -> list[str]:
    out = [
        "| design.md target | limit | ours | LiteLLM | floor | ours ÷ LiteLLM | verdict | how / note |",
        "| --- | --- | --: | --: | --: | --: | --- | --- |",
    ]
    for r in rows:
        unit = f" {r['unit']}"
        digits = (
            4
            if r["unit"] == "USD"
            else (0 if r["unit"] in ("req/s", "streams") else (1 if r["unit"] in ("MB", "s") else 2))
        )
        out.append(
            f"| {r['target']} | {r['limit']} | {_f(r['ours'], digits, unit)} | {_f(r['litellm'], digits, unit)} | "
            f"{_f(r['floor'], digits, unit)} | {_x(r['ours_over_litellm'])} | {_met(r['met'])} | {r['note']} |"
        )
    return out


def _short_answers(s: Json) -> list[str]:
    rows = s["targets"]
    met = [r["target"] for r in rows if r["met"] is True]
    missed = [r["target"] for r in rows if r["met"] is False]
    peak = s["peak"]
    ours, peer, floor = (peak.get(t, {}).get("rps", math.nan) for t in ("sidecar", "litellm", "passthrough"))
    c1 = s["c1"]
    lines = [
        f"**Short answers.** In the same run, on the same cores and against the same mock, the sidecar served "
        f"{_f(ours, 0)} req/s at its peak, the bare aiohttp floor {_f(floor, 0)} and LiteLLM proxy "
        f"{_f(peer, 0)}: the sidecar is {_x(ours / floor if floor else math.nan)} the floor and "
        f"{_f(ours / peer if peer else math.nan, 0)}× LiteLLM. At concurrency 1 the sidecar adds "
        f"{_f(c1['sidecar']['added_p50_ms'], 3)} ms at p50 (the floor {_f(c1['passthrough']['added_p50_ms'], 3)}, "
        f"LiteLLM {_f(c1['litellm']['added_p50_ms'], 2)} ms).",
        "",
        f"Met here: {'; '.join(met) or 'none'}. **Not met:** {'; '.join(missed) or 'none'}.",
    ]
    return lines


def _c1_table(c1: Json) -> list[str]:
    out = [
        "| target | p50 ms | p99 ms | added p50 ms | added p99 ms | added p50 ÷ floor's | added p99 ÷ floor's | CPU µs/req | server core: ours + foreign |",
        "| --- | --: | --: | --: | --: | --: | --: | --: | --: |",
    ]
    for t, r in c1.items():
        direct = t == "direct"
        out.append(
            f"| {NAMES[t]} | {_f(r['p50_ms'], 3)} | {_f(r['p99_ms'], 3)} | {'–' if direct else _f(r['added_p50_ms'], 3)} | "
            f"{'–' if direct else _f(r['added_p99_ms'], 3)} | {_x(r.get('added_p50_vs_passthrough'))} | "
            f"{_x(r.get('added_p99_vs_passthrough'))} | {_f(r['cpu_us_per_request'], 0)}{' (mock)' if direct else ''} | "
            + (
                "(mock, core 0) |"
                if direct
                else f"{_pct(r['server_core_busy'])} + {_pct(r['server_core_foreign'])} |"
            )
        )
    return out


def _sweep_table(s: Json) -> list[str]:
    sweep = s["sweep"]
    head = "| concurrency | " + " | ".join(
        f"{NAMES[t]} req/s | added p99 ms | errors" if t != "direct" else "mock alone req/s | p99 ms"
        for t in analysis.TARGETS
    )
    cols = sum(3 if t != "direct" else 2 for t in analysis.TARGETS)
    out = [head + " |", "| --: " + "| --: " * cols + "|"]
    for conc, rows in sweep.items():
        cells = [conc]
        for t in analysis.TARGETS:
            r = rows.get(t)
            if r is None:
                cells += ["–"] * (2 if t == "direct" else 3)
            elif t == "direct":
                cells += [_f(r["served_rps"], 0), _f(r["p99_ms"], 2)]
            else:
                cells += [_f(r["served_rps"], 0), _f(r["added_p99_ms"], 2), _pct(r["error_rate"])]
        out.append("| " + " | ".join(cells) + " |")
    return out


def _idle_note(s: Json) -> list[str]:
    """Levels where a loaded proxy kept its core mostly idle: it waited on something other than CPU."""
    idle = [
        f"{NAMES[t].strip('*')} at c={c} ({_pct(r['server_core_busy'])} busy, {_f(r['served_rps'], 0)} req/s)"
        for c, rows in s["sweep"].items()
        for t, r in rows.items()
        if t in analysis.PROXIES
        and int(c) >= 16
        and r["server_core_busy"] < 0.5
        and r["server_core_busy"] + r["server_core_foreign"] < 0.6
    ]
    if not idle:
        return []
    return [
        "",
        "Loaded but idle (concurrency ≥ 16, the server under 50% of its core and the core itself mostly idle, "
        "medians over rounds, while every connection had a request outstanding): "
        + "; ".join(idle)
        + ". Such a server waits on something other than its CPU, so its req/s there is not its capacity.",
    ]


def _sustained_table(s: Json) -> list[str]:
    out = [
        "| target | peak req/s (at c) | CPU µs/req at peak | req/s at added p99 ≤ 5 ms (c, errors) | req/s at added p99 ≤ 10 ms (c, errors) |",
        "| --- | --: | --: | --: | --: |",
    ]
    for t in analysis.PROXIES:
        peak = s["peak"].get(t, {})
        cells = [
            NAMES[t],
            f"{_f(peak.get('rps'), 0)} (c={peak.get('concurrency')})",
            _f(peak.get("cpu_us_per_request"), 0),
        ]
        for bound in ("5", "10"):
            b = s["sustained"].get(t, {}).get(bound, {})
            cells.append(
                "none (no level within the bound)" if not b.get("concurrency")
                else f"{_f(b['rps'], 0)} (c={b['concurrency']}, {_pct(b['error_rate'])})"
            )  # fmt: skip
        out.append("| " + " | ".join(cells) + " |")
    return out


def _mock_table(s: Json) -> list[str]:
    out = [
        "| concurrency | mock alone req/s | mock p99 ms | mock CPU µs/req | ⇒ mock capacity on a core of its own, req/s | load core busy (mock + client) | busiest proxy req/s | as a share of the mock alone |",
        "| --: | --: | --: | --: | --: | --: | --: | --: |",
    ]
    for conc, r in s["mock_ceiling"].items():
        out.append(
            f"| {conc} | {_f(r['rps'], 0)} | {_f(r['p99_ms'], 2)} | {_f(r['mock_cpu_us_per_request'], 1)} | "
            f"{_f(r['mock_capacity_rps'], 0)} | {_pct(r['load_core_busy'])} | {_f(r['busiest_proxy_rps'], 0)} | "
            f"{_pct(r['busiest_proxy_share'])} |"
        )
    return out


def _streams_tables(s: Json) -> list[str]:
    out = [
        "**50 concurrent streams** (20 tokens at 25 ms; medians over rounds)",
        "",
        "| target | TTFT p50 ms | TTFT p99 ms | added TTFT p50 ms | added TTFT p99 ms | CPU µs/stream | errors |",
        "| --- | --: | --: | --: | --: | --: | --: |",
    ]
    for t, r in s["streaming"].items():
        d = t == "direct"
        out.append(
            f"| {NAMES[t]} | {_f(r['ttft_p50_ms'], 2)} | {_f(r['ttft_p99_ms'], 2)} | {'–' if d else _f(r['added_ttft_p50_ms'], 2)} | "
            f"{'–' if d else _f(r['added_ttft_p99_ms'], 2)} | {_f(r['cpu_us_per_stream'], 0)}{' (mock)' if d else ''} | {r['errors']} |"
        )
    waves = s["waves"]
    n = next(iter(waves.values()))["streams"] if waves else 0
    out += [
        "",
        f"**{n:,} concurrent streams** (one wave started over 1 s; 20 tokens at 100 ms each; a stream still open after the limit counts as incomplete)",
        "",
        "| target | completed | errors + incomplete | TTFT p50 ms | TTFT p99 ms | added TTFT p50 / p99 ms | inter-chunk p50 / p99 ms | added inter-chunk p99 ms | RSS before → peak → 2 s after, MB | server CPU µs per SSE event | foreign load, server core |",
        "| --- | --: | --: | --: | --: | --: | --: | --: | --: | --: | --: |",
    ]
    for t, r in waves.items():
        d = t == "direct"
        rss = (
            "–"
            if d
            else f"{_f(r['rss_before_mb'], 1)} → {_f(r['rss_peak_mb'], 1)} → {_f(r['rss_after_mb'], 1)}"
        )
        out.append(
            f"| {NAMES[t]} | {_f(r['completed'], 0)} / {r['streams']:,} | {r['errors']} + {r['incomplete']} | "
            f"{_f(r['ttft_p50_ms'], 1)} | {_f(r['ttft_p99_ms'], 1)} | {'–' if d else _f(r['added_ttft_p50_ms'], 1) + ' / ' + _f(r['added_ttft_p99_ms'], 1)} | "
            f"{_f(r['gap_p50_ms'], 1)} / {_f(r['gap_p99_ms'], 1)} | {'–' if d else _f(r['added_gap_p99_ms'], 1)} | {rss} | "
            f"{'–' if d else _f(r['cpu_us_per_event'], 0)} | {'–' if d else _pct(r['server_core_foreign'])} |"
        )
    return out


def _rss_table(s: Json) -> list[str]:
    out = [
        "| process | idle after start | of which heap (anon) + mapped files | peak under load | idle at the end | of which heap + files |",
        "| --- | --: | --: | --: | --: | --: |",
    ]

    def split(detail: Json | None) -> str:
        if not detail or "anon" not in detail:
            return "n/a"
        return f"{_f(detail['anon'], 1)} + {_f(detail.get('file'), 1)}"

    names = {
        **NAMES,
        "sidecar": "**sidecar, standalone** (`--config`)",
        "sidecar-operator": "**sidecar, operator-fed** (`--operator`)",
    }
    for t, r in s["rss_mb"].items():
        peak = "not loaded" if t == "sidecar-operator" else _f(r["peak"], 1)
        out.append(
            f"| {names.get(t, t)} | {_f(r['idle_start'], 1)} | {split(r.get('idle_start_detail'))} | {peak} | "
            f"{_f(r['idle_end'], 1)} | {split(r.get('idle_end_detail'))} |"
        )
    return out


def _repeatability(json_path: str) -> list[str]:
    """One row per stored peers run beside this one: how far the headline ratios move between runs."""
    here = (ROOT / json_path).resolve()
    runs = sorted(p for p in here.parent.glob("peers-*.json"))
    if len(runs) < 2:
        return []
    out = [
        "### Repeatability",
        "",
        "Every stored run of this bench (`docs/bench/peers-*.json`); the page above is the one in bold. The",
        "foreign load is the median share of the server core other processes took, per phase.",
        "",
        "| run | foreign load: c=1 / sweep / sidecar's wave | c=1 added p50 ÷ floor's | c=1 added p99 ÷ floor's | peak req/s: ours ÷ floor's | ours ÷ LiteLLM | LiteLLM peak req/s | added TTFT p50, 50 streams | idle RSS standalone / operator-fed MB |",
        "| --- | --: | --: | --: | --: | --: | --: | --: | --: |",
    ]
    for run in runs:
        data = json.loads(run.read_text())
        s = analysis.summarize(data)
        fg, c1, peak, rss = s["foreign"], s["c1"], s["peak"], s["rss_mb"]
        ours, floor, peer = (
            peak.get(t, {}).get("rps", math.nan) for t in ("sidecar", "passthrough", "litellm")
        )
        name = run.stem.removeprefix("peers-")
        out.append(
            f"| {'**' + name + '**' if run.resolve() == here else name} | {_pct(fg['c1']['server_core'])} / "
            f"{_pct(fg['sweep']['server_core'])} / {_pct(s['waves'].get('sidecar', {}).get('server_core_foreign'))} | "
            f"{_x(c1['sidecar'].get('added_p50_vs_passthrough'))} | {_x(c1['sidecar'].get('added_p99_vs_passthrough'))} | "
            f"{_x(ours / floor if floor else math.nan)} | {_f(ours / peer if peer else math.nan, 1)}× | {_f(peer, 0)} | "
            f"{_f(s['streaming'].get('sidecar', {}).get('added_ttft_p50_ms'), 2)} ms | "
            f"{_f(rss.get('sidecar', {}).get('idle_start'), 1)} / {_f(rss.get('sidecar-operator', {}).get('idle_start'), 1)} |"
        )
    return [*out, ""]


def markdown_page(result: Json, s: Json, *, json_path: str) -> str:
    meta = result["meta"]
    plan = meta["plan"]
    stream = meta["stream_plan"]
    fg = s["foreign"]
    startup = result.get("startup_s", {})
    op_after = s["rss_mb"].get("sidecar-operator", {}).get("after_one_request")
    lines = [
        "<!-- Generated by `python -m bench.peers --render "
        + json_path
        + "` (bench/peers/render.py). Do not edit by hand:",
        "     change bench/peers/render.py or bench/peers/page_history.md and render again. -->",
        "# Performance: the sidecar beside the Python floor and LiteLLM proxy",
        "",
        "This page answers, with one run of `make bench` in which all of them ran side by side: what does the",
        "sidecar cost on the hot path, against calling the provider directly, against the cheapest Python",
        "proxy possible (a bare aiohttp + uvloop passthrough, *the floor*) and against LiteLLM proxy, and which",
        "of design.md's targets does it meet?",
        "",
        *_short_answers(s),
        "",
        f"Figures from `{json_path}` (run `{meta['started']}`, {meta['seconds']:.0f} s; commit `{meta['git'].get('commit', '')[:7]}`"
        f"{', sidecar files modified in the working tree' if meta['git'].get('sidecar_dirty') else ''}; LiteLLM {meta['versions'].get('litellm')}).",
        f"Foreign load (other processes on this shared machine) took a median {_pct(fg['c1']['server_core'])} of the server core during the",
        f"concurrency-1 segments and {_pct(fg['sweep']['server_core'])} during the sweep (up to {_pct(fg['sweep']['server_core_max'])} in one segment); load average",
        f"{meta['loadavg_before'][0]:.1f} before the run and {meta['loadavg_after'][0]:.1f} after. Quote ratios and medians, not absolute figures.",
        "",
        "## Against design.md's targets",
        "",
        *_targets_table(s["targets"]),
        "",
        "*Floor* is the bare aiohttp + uvloop passthrough. Latency targets are stated against it, so its",
        "column is the yardstick there. Added latency is the target's quantile minus the mock's quantile in the",
        "same round, then the median over rounds.",
        "",
        "## Results",
        "",
        "![concurrency 1](bench/peers-latency.png)",
        "",
        f"**Non-streaming, concurrency 1** (medians over {plan['c1_rounds']} rounds of {plan['c1_seconds']:g} s)",
        "",
        *_c1_table(s["c1"]),
        "",
        "![sweep](bench/peers-sweep.png)",
        "",
        f"**Concurrency sweep** (closed loop; {plan['sweep_rounds']} rounds of {plan['sweep_seconds']:g} s per level and target; req/s is answers",
        "received inside the window. The warm-up lasts until every connection has had one answer, and the window",
        "at least as long as that took, so a server slower than the window (LiteLLM at high concurrency, whose",
        "asyncio loop interleaves all requests so that a whole cycle finishes at once) is measured over a full",
        "cycle. Errors are non-200 answers and broken connections as a share of all requests)",
        "",
        *_sweep_table(s),
        *_idle_note(s),
        "",
        f"**What each sustains** (peak over the sweep, and the highest req/s at a level whose added p99 stays within the bound with ≤ {analysis.MAX_ERROR_RATE:.1%} errors)",
        "",
        *_sustained_table(s),
        "",
        "**The mock's own ceiling.** The direct rows of the sweep are the mock alone, driven by the same",
        "client on the same core (core 0) as in every other segment. The mock is never the limit: at every",
        "level it serves many times what the busiest proxy drew from it, and its CPU per request says what a",
        "core of its own would serve.",
        "",
        *_mock_table(s),
        "",
        "![streams](bench/peers-streams.png)",
        "",
        *_streams_tables(s),
        "",
        "**Memory** (VmRSS, MB). Idle means 1 s after the process listened (for the operator-fed sidecar: 1 s",
        "after it held the pushed config), before its first request. That is the figure the targets use, and",
        "the conservative one: VmRSS also counts mapped files (the interpreter, shared libraries), and this",
        "machine's kernel pages cold file pages out of idle processes (DAMON reclaim runs here), so an idle",
        "process shrinks over minutes. The heap (anonymous memory) is what the sidecar's own code decides.",
        "",
        *_rss_table(s),
        "",
        "The operator-fed sidecar runs the real `--operator` path: TLS with a CA file, a bearer token, the",
        "`StreamConfig` stream and the usage stream, against `bench/peers/config_server.py`, a minimal config",
        "server that pushes the same route compiled by the shared compiler (no TokenReview, no Kubernetes).",
        f"It answered one request before the load phases and then stayed idle ({_f(op_after, 1)} MB after that",
        "request). A standalone sidecar compiles its YAML in a short-lived child process, so the loader and",
        "the compiler (pydantic, PyYAML) never stay resident; an operator-fed one holds grpc's client, its TLS",
        "stack and the usage stream instead.",
        "",
        *_repeatability(json_path),
        "## How it is measured",
        "",
        "```sh",
        "make bench                          # the full run (~10 min, plus ~1-2 min to install LiteLLM the first time)",
        "python -m bench.peers --quick       # a short smoke run, written under bench/results/quick/",
        f"python -m bench.peers --render {json_path}   # plots and this page again",
        "```",
        "",
        "| what | how |",
        "| --- | --- |",
        f"| machine | {meta['cores']} cores ({meta['cpu']}), **shared with other work**: each segment records how busy each core was with processes other than ours (the foreign load above) |",
        "| pinning | core 0: the load generator (the bench process), the mock and the idle config server. Core 1: the floor, both sidecars and LiteLLM. All start at once; only the target under test is loaded. Affinity is set before `exec`, so every thread and child inherits it |",
        "| mock upstream | `bench/overhead/mock.py`: a bare asyncio `Protocol` under uvloop (about 10 µs of CPU per request, like design.md's nginx) that answers `POST …/chat/completions` with a fixed 290-byte `chat.completion`, or with SSE when asked to stream: the first token at once, then one event every N ms |",
        "| floor | `bench/overhead/passthrough.py`: aiohttp server + one keep-alive `ClientSession`, copies the body both ways, relays SSE |",
        "| sidecar | the real `llmroute-sidecar` CLI, gRPC front on, one `openai-compatible` backend (the mock), `--audit-log off` (LiteLLM's logging is off too). Standalone: `--config route.yaml`. Operator-fed: `--operator` (above) |",
        f"| LiteLLM proxy | `litellm[proxy]=={meta['versions'].get('litellm')}` from PyPI in a venv of its own (`~/.cache/llmroute/bench/`, reused by later runs), `litellm --config … --num_workers 1 --telemetry False`; one model `chat` → `openai/bench-model` at the mock; no database (no `database_url`), a master key (the one every target gets as its bearer token), `disable_spend_logs`, `disable_error_logs`, `turn_off_message_logging`, no callbacks, `LITELLM_LOG=ERROR`, the bundled model-cost map (`LITELLM_LOCAL_MODEL_COST_MAP`: no network fetch). It listened {_f(startup.get('litellm'), 0)} s after start. Its config is in the JSON (`meta.litellm`) |",
        "| requests | identical for every target: the same body (`model: chat`, one user message, `max_tokens`), the same headers and token. LiteLLM forwards neither `metadata` nor `user` upstream, so the stream interval the mock should use also rides in the message text (`[bench-interval-ms:N]`) |",
        "| load generator | closed loop with a fixed pool of *c* keep-alive connections; each sends a pre-built request and waits for the whole answer before the next. A bare asyncio `Protocol` client: 10–15 µs of CPU per request (so core 0 never limits a proxy). Streams use an aiohttp client and time the first `data:` bytes (TTFT) and the gaps between reads (inter-chunk) |",
        f"| rounds | every phase runs in rounds; the order of the targets rotates each round (and the order of the sweep's levels alternates), so noise hits all targets alike. Each segment: {plan['warmup']:g} s warm-up (not counted), then the window |",
        f"| phases | concurrency 1: {plan['c1_rounds']} rounds × {plan['c1_seconds']:g} s. Sweep: levels {', '.join(str(c) for c in plan['sweep'])}, {plan['sweep_rounds']} rounds × {plan['sweep_seconds']:g} s. Streams: {stream['stream_concurrency']} at a time, {stream['stream_tokens']} tokens at {stream['stream_interval_ms']:g} ms, {stream['stream_seconds']:g} s × {stream['stream_rounds']} rounds. Wave: {stream['many_streams']:,} streams started over 1 s, {stream['many_tokens']} tokens at {stream['many_interval_ms']:g} ms, abandoned after {stream['many_limit']:g} s |",
        "| statistics | per segment p50/p99 (nearest rank); the figure is the **median over rounds**. *Added* latency is target minus direct in the same round (added p99 is a difference of p99s). Ratios against the floor are ratios of added latencies, as design.md states its targets |",
        "| CPU and RSS | CPU from `/proc/<pid>/stat` over the exact window, per request (the most noise-robust figure: 1 s ÷ CPU per request is what a core of its own would serve). RSS is `VmRSS`: idle after start, sampled every 50 ms under load, 2 s after the wave, and at the end |",
        "",
        "## Caveats",
        "",
        "- The machine is shared and busy (see the foreign load above). Interleaved rounds and medians keep",
        "  the comparison fair within a run, but absolute figures move by ±30% between runs; ratios and CPU per",
        "  request move less.",
        "- At concurrency 1 the p99s of every proxy are set mostly by other processes preempting the server",
        "  core, so the p99 ratio says less than the p50 ratio.",
        "- One core runs each server. LiteLLM is designed to scale with workers (one per core); design.md's",
        "  throughput target compares one worker with one sidecar, which is what is measured.",
        "- The TTFT of a 1,000-stream wave is mostly queueing for the one server core while 1,000 streams",
        "  start within a second; the 50-stream figure is the sidecar's own cost per stream.",
        "- In the direct wave the client and the mock carry all 1,000 streams on core 0 by themselves, so the",
        "  direct TTFT and gap quantiles of the wave are not a clean zero, and an added figure can come out",
        "  negative. Read the wave's absolute columns and its completion, CPU and RSS.",
        "- The mock is in Python, not nginx; it costs about 10 µs per request and adds the same small constant",
        "  to every target.",
        "",
    ]
    history = HISTORY.read_text() if HISTORY.exists() else ""
    return "\n".join(lines) + "\n" + history


def render(json_path: Path, *, write_page: bool = True, img_dir: Path | None = None) -> None:
    result = json.loads(json_path.read_text())
    summary = analysis.summarize(result)
    target_dir = img_dir or ROOT / "docs" / "bench"
    for path in plots.render(result, summary, target_dir):
        print(f"plot: {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")
    rel = (
        str(json_path.resolve().relative_to(ROOT))
        if json_path.resolve().is_relative_to(ROOT)
        else str(json_path)
    )
    text = markdown_page(result, summary, json_path=rel)
    if write_page:
        PAGE.write_text(text)
        print(f"page: {PAGE.relative_to(ROOT)}")
    else:
        out = target_dir / "performance.md"
        out.write_text(text)
        print(f"page (not installed): {out}")
    print()
    print("\n".join(_targets_table(summary["targets"])))
