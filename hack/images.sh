#!/usr/bin/env bash
# Builds the llmroute container images with `docker build` (used by `make images`).
#
#   hack/images.sh [operator|sidecar|fake-provider ...]    default: all three
#
# Environment:
#   IMAGE_REGISTRY  repository prefix        (default ghcr.io/llmroute, the chart's default)
#   IMAGE_TAG       tag of every image       (default: the version in pyproject.toml)
#   PLATFORM        docker build --platform  (default: the engine's own platform)
#   DOCKER          the docker CLI           (default docker)
#
# Needs a running Docker engine; without one it stops before doing anything and says so.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DOCKER="${DOCKER:-docker}"

die() {
  echo "hack/images.sh: $*" >&2
  exit 2
}

if ! command -v "${DOCKER}" >/dev/null 2>&1; then
  die "make images needs a Docker engine (no '${DOCKER}' command on PATH). Install Docker (or set DOCKER=/path/to/docker) and run it again; nothing was built."
fi
if ! "${DOCKER}" info >/dev/null 2>&1; then
  die "make images needs a Docker engine (docker info failed: no engine is reachable). Start Docker, or point DOCKER_HOST at one, and run it again; nothing was built."
fi

version="$(sed -n 's/^version = "\(.*\)"$/\1/p' "${ROOT}/pyproject.toml" | head -n 1)"
[[ -n "${version}" ]] || die "cannot read the version from pyproject.toml"
registry="${IMAGE_REGISTRY:-ghcr.io/llmroute}"
tag="${IMAGE_TAG:-${version}}"
revision="$(git -C "${ROOT}" rev-parse --verify --quiet HEAD 2>/dev/null || echo unknown)"

# image name -> Dockerfile (a function, not an associative array: macOS still ships bash 3.2)
dockerfile_of() {
  case "$1" in
    operator) echo images/operator.Dockerfile ;;
    sidecar) echo images/sidecar.Dockerfile ;;
    fake-provider) echo images/fakes.Dockerfile ;;
    *) return 1 ;;
  esac
}

if [[ $# -eq 0 ]]; then
  set -- operator sidecar fake-provider
fi
for name in "$@"; do
  dockerfile_of "${name}" >/dev/null || die "unknown image '${name}' (known: operator sidecar fake-provider)"
done

platform_args=()
if [[ -n "${PLATFORM:-}" ]]; then
  platform_args=(--platform "${PLATFORM}")
fi

built=()
for name in "$@"; do
  ref="${registry}/${name}:${tag}"
  file="$(dockerfile_of "${name}")"
  echo "==> docker build ${ref} (${file})"
  "${DOCKER}" build \
    ${platform_args[@]+"${platform_args[@]}"} \
    --file "${ROOT}/${file}" \
    --build-arg "VERSION=${version}" \
    --build-arg "REVISION=${revision}" \
    --tag "${ref}" \
    "${ROOT}"
  built+=("${ref}")
done

echo "==> built:"
printf '    %s\n' "${built[@]}"
