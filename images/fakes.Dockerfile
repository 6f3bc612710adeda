# syntax=docker/dockerfile:1
# llmroute-fake-provider: fake LLM providers speaking each provider's real wire protocol, with fault
# knobs. For tests only (`make kind-e2e` runs them in the kind cluster); never deploy it for real
# traffic. Build from the repository root:
#   docker build -f images/fakes.Dockerfile -t ghcr.io/llmroute/fake-provider:0.1.0 .
# It holds llmroute[sidecar] (the fakes need aiohttp, orjson and the sidecar's AWS event-stream and
# SigV4 code) plus llmroute_fakes; no operator, no kopf, no Kubernetes client, no dev tools.

# ---------------------------------------------------------------- builder: wheel -> /opt/llmroute
FROM python:3.11.17-slim-bookworm AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_ROOT_USER_ACTION=ignore

WORKDIR /src
COPY pyproject.toml README.md ./
COPY proto/ proto/
COPY sidecar/ sidecar/
COPY operator/ operator/
COPY fakes/ fakes/

RUN python -m venv /opt/llmroute \
 && python -m pip wheel --no-deps --wheel-dir /wheels . \
 && /opt/llmroute/bin/pip install "$(ls /wheels/llmroute-*.whl)[sidecar]"

RUN site="$(/opt/llmroute/bin/python -c 'import sysconfig; print(sysconfig.get_path("purelib"))')" \
 && rm -rf "${site}/llmroute_operator" /opt/llmroute/bin/llmroute-operator \
 && /opt/llmroute/bin/python -m pip uninstall --yes pip setuptools

# ---------------------------------------------------------------- runtime: the venv and nothing else
FROM python:3.11.17-slim-bookworm AS runtime

ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="llmroute-fake-provider" \
      org.opencontainers.image.description="llmroute fake LLM providers for tests (real wire protocols, fault knobs); not for production" \
      org.opencontainers.image.source="https://github.com/llmroute/llmroute" \
      org.opencontainers.image.url="https://github.com/llmroute/llmroute" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.vendor="llmroute" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.base.name="docker.io/library/python:3.11.17-slim-bookworm"

ENV PATH=/opt/llmroute/bin:${PATH} \
    HOME=/tmp \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

COPY --from=builder /opt/llmroute /opt/llmroute

RUN groupadd --system --gid 65532 llmroute \
 && useradd --system --uid 65532 --gid 65532 --home-dir /tmp --no-create-home --shell /usr/sbin/nologin llmroute \
 && python_bin=/opt/llmroute/bin/python \
 && "${python_bin}" -c "import importlib.util as u, sys; \
found = [m for m in ['llmroute_operator', 'kopf', 'kubernetes_asyncio'] if u.find_spec(m) is not None]; \
found and sys.exit(f'the fake-provider image must not contain {found}'); \
import llmroute_fakes.__main__" \
 && llmroute-fake-provider --help > /dev/null

# No fixed port: pass --port (kind-e2e uses 8080) and --host 0.0.0.0 (the default is loopback).
EXPOSE 8080
USER 65532:65532
ENTRYPOINT ["llmroute-fake-provider"]
