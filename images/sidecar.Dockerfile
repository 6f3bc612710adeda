# syntax=docker/dockerfile:1
# llmroute-sidecar: the router injected beside every workload (design.md: HTTP 127.0.0.1:14080,
# gRPC 127.0.0.1:14081, admin :14090). Build from the repository root:
#   docker build -f images/sidecar.Dockerfile -t ghcr.io/llmroute/sidecar:0.1.0 .
# It holds llmroute[sidecar] only: no kopf, no Kubernetes client, no operator code, no fake providers.
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
 && /opt/llmroute/bin/pip install "$(ls /wheels/llmroute-*.whl)[sidecar]"

# Drop what the sidecar must not hold (the operator and the fake providers ship in the same wheel),
# their console scripts, and the venv's own installers (nothing is installed at runtime).
RUN site="$(/opt/llmroute/bin/python -c 'import sysconfig; print(sysconfig.get_path("purelib"))')" \
 && rm -rf "${site}/llmroute_operator" "${site}/llmroute_fakes" \
           /opt/llmroute/bin/llmroute-operator /opt/llmroute/bin/llmroute-fake-provider \
 && /opt/llmroute/bin/python -m pip uninstall --yes pip setuptools

# ---------------------------------------------------------------- runtime: the venv and nothing else
FROM python:3.11.17-slim-bookworm AS runtime

ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="llmroute-sidecar" \
      org.opencontainers.image.description="llmroute router sidecar: OpenAI-compatible HTTP and gRPC on localhost, routing, failover, budgets" \
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

# A passwd entry for UID 65532 (the UID the operator injects the sidecar with), and proof that the
# shipped venv is the lean one: the sidecar imports, and the operator, the fakes, kopf and the
# Kubernetes clients cannot be imported.
RUN groupadd --system --gid 65532 llmroute \
 && useradd --system --uid 65532 --gid 65532 --home-dir /tmp --no-create-home --shell /usr/sbin/nologin llmroute \
 && python_bin=/opt/llmroute/bin/python \
 && "${python_bin}" -c "import importlib.util as u, sys; \
forbidden = ['llmroute_operator', 'llmroute_fakes', 'kopf', 'kubernetes_asyncio', 'kubernetes']; \
found = [m for m in forbidden if u.find_spec(m) is not None]; \
found and sys.exit(f'the sidecar image must not contain {found}'); \
import llmroute_proto, llmroute_sidecar.__main__" \
 && llmroute-sidecar --help > /dev/null

# 14080 HTTP (OpenAI-compatible) and 14081 gRPC listen on 127.0.0.1 inside the pod; 14090 is admin.
EXPOSE 14080 14081 14090
USER 65532:65532
ENTRYPOINT ["llmroute-sidecar"]
