# syntax=docker/dockerfile:1
# llmroute-operator: the kopf operator (design.md: config server gRPC/TLS :14100, webhooks HTTPS
# :14443, metrics and probes :14091). Build from the repository root:
#   docker build -f images/operator.Dockerfile -t ghcr.io/llmroute/operator:0.1.0 .
# It holds llmroute[operator]; the fake providers (tests only) are removed.
#
# The base is pinned to a patch-level tag. Pin it by digest as well where a registry is reachable
# (see images/README.md); builder and runtime must stay on the same image, because the venv's
# python is a symlink to the base image's /usr/local/bin/python3.

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

# One wheel holds every package of the distribution; the extra decides the dependencies.
RUN python -m venv /opt/llmroute \
 && python -m pip wheel --no-deps --wheel-dir /wheels . \
 && /opt/llmroute/bin/pip install "$(ls /wheels/llmroute-*.whl)[operator]"

# Drop the fake providers (tests only) and their console script, and the venv's own installers
# (nothing is installed at runtime). llmroute_sidecar stays: the operator imports nothing from it,
# but it is pure Python, small, and keeps `llmroute-sidecar` available for debugging.
RUN site="$(/opt/llmroute/bin/python -c 'import sysconfig; print(sysconfig.get_path("purelib"))')" \
 && rm -rf "${site}/llmroute_fakes" /opt/llmroute/bin/llmroute-fake-provider \
 && /opt/llmroute/bin/python -m pip uninstall --yes pip setuptools

# ---------------------------------------------------------------- runtime: the venv and nothing else
FROM python:3.11.17-slim-bookworm AS runtime

ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="llmroute-operator" \
      org.opencontainers.image.description="llmroute operator: reconciles LLMRoute/LLMBudget, pushes config to sidecars, injects them" \
      org.opencontainers.image.source="https://github.com/llmroute/llmroute" \
      org.opencontainers.image.url="https://github.com/llmroute/llmroute" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.vendor="llmroute" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.base.name="docker.io/library/python:3.11.17-slim-bookworm"

# Read-only root filesystem: nothing writes at runtime except to an emptyDir on /tmp (HOME too).
ENV PATH=/opt/llmroute/bin:${PATH} \
    HOME=/tmp \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

COPY --from=builder /opt/llmroute /opt/llmroute

# A passwd entry for UID 65532 (the chart's runAsUser), and proof that the shipped venv runs the
# operator and holds no fake providers.
RUN groupadd --system --gid 65532 llmroute \
 && useradd --system --uid 65532 --gid 65532 --home-dir /tmp --no-create-home --shell /usr/sbin/nologin llmroute \
 && python_bin=/opt/llmroute/bin/python \
 && "${python_bin}" -c "import importlib.util as u, sys; \
found = [m for m in ['llmroute_fakes'] if u.find_spec(m) is not None]; \
found and sys.exit(f'the operator image must not contain {found}'); \
import kopf, kubernetes_asyncio, llmroute_proto, llmroute_operator.__main__" \
 && llmroute-operator --help > /dev/null

# 14100 config server (gRPC, TLS), 14443 admission webhooks (HTTPS), 14091 metrics and probes.
EXPOSE 14100 14443 14091
USER 65532:65532
ENTRYPOINT ["llmroute-operator"]
