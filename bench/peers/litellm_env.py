"""LiteLLM proxy for the bench: its own venv (cached), its config, and the command that starts it.

LiteLLM is a peer we measure, never a dependency of llmroute, so it lives in a venv of its own under
``~/.cache/llmroute/bench/`` (``LLMROUTE_BENCH_CACHE`` overrides), created once with ``python -m venv``
and ``pip install 'litellm[proxy]==VERSION'`` and reused by later runs (a stamp file marks a finished
install). The proxy runs as LiteLLM documents it for production, cut down to the request path:
one uvicorn worker, no database (no ``database_url``), no master key, spend and error logs off,
message logging off, no callbacks, telemetry off, the bundled model-cost map (no network fetch),
and log level ERROR. One model, ``chat``, points at the bench mock as an OpenAI-compatible upstream.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

__all__ = ["LITELLM_VERSION", "argv", "config_yaml", "ensure", "environment", "venv_dir"]

# Pinned. 1.107.0 was a compromised release (pulled from PyPI); 1.108+ need extras this index lacks.
LITELLM_VERSION = "1.106.12"


def venv_dir() -> Path:
    base = Path(os.environ.get("LLMROUTE_BENCH_CACHE") or Path.home() / ".cache" / "llmroute" / "bench")
    return base / f"litellm-{LITELLM_VERSION}"


def _python(venv: Path) -> Path:
    return venv / "bin" / "python"


def ensure(*, timeout: float = 900.0) -> Path:
    """The venv's python, installing LiteLLM first if this version is not cached yet."""
    venv = venv_dir()
    stamp = venv / ".installed"
    if stamp.exists():
        print(f"litellm {LITELLM_VERSION}: cached venv {venv}", flush=True)
        return _python(venv)
    started = time.monotonic()
    print(f"litellm {LITELLM_VERSION}: creating {venv} (first time: a few minutes)", flush=True)
    venv.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True, timeout=120)
    pip = [str(_python(venv)), "-m", "pip", "--disable-pip-version-check"]
    subprocess.run([*pip, "install", "-q", "--upgrade", "pip"], check=True, timeout=300)
    # Progress lines: pip's "Collecting"/"Downloading"/"Installing" lines, one per package.
    command = [*pip, "install", "--progress-bar", "off", f"litellm[proxy]=={LITELLM_VERSION}"]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as pipe:
        assert pipe.stdout is not None
        for line in pipe.stdout:
            if line.startswith(("Collecting", "Installing", "Successfully", "ERROR")):
                print(f"  [{time.monotonic() - started:4.0f}s] {line.rstrip()}", flush=True)
            if time.monotonic() - started > timeout:
                pipe.kill()
                raise SystemExit(f"litellm install passed {timeout:.0f}s and was stopped")
        if pipe.wait() != 0:
            raise SystemExit(f"pip install litellm[proxy]=={LITELLM_VERSION} failed")
    stamp.write_text(LITELLM_VERSION + "\n")
    print(f"litellm {LITELLM_VERSION}: installed in {time.monotonic() - started:.0f}s", flush=True)
    return _python(venv)


def config_yaml(mock_port: int) -> str:
    return f"""\
model_list:
- model_name: chat
  litellm_params:
    model: openai/bench-model
    api_base: http://127.0.0.1:{mock_port}/v1
    api_key: bench
litellm_settings:
  set_verbose: false
  json_logs: false
  turn_off_message_logging: true
  drop_params: true
  callbacks: []
  success_callback: []
  failure_callback: []
  telemetry: false
general_settings:
  disable_spend_logs: true
  disable_error_logs: true
  disable_adding_master_key_hash_to_db: true
  allow_requests_on_db_unavailable: true
"""


def argv(python: Path, config: Path, port: int) -> list[str]:
    litellm = python.parent / "litellm"
    return [
        str(litellm), "--config", str(config), "--host", "127.0.0.1", "--port", str(port),
        "--num_workers", "1", "--telemetry", "False",
    ]  # fmt: skip


def environment() -> dict[str, str]:
    """Environment of the proxy process: quiet, no network look-ups, no database."""
    return {
        "LITELLM_LOG": "ERROR",
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",  # the bundled cost map, not a fetch from the internet
        "LITELLM_MODE": "PRODUCTION",  # no .env loading
        "NUM_WORKERS": "1",  # and no DATABASE_URL: no database
        "DISABLE_SCHEMA_UPDATE": "True",
        "NO_DOCS": "True",
        "NO_REDOC": "True",
        "OPENAI_API_KEY": "bench",
    }


if __name__ == "__main__":
    print(ensure())
