"""Semantic validation of LLMRoute and LLMBudget beyond what the CRD schema and CEL can see. Pure code.

The validating webhook (``webhooks/admission.py``) refuses a resource with these problems at
``kubectl apply``; the status writer (``status/``) reports the same problems in the ``Accepted``
condition, for resources that reached the cluster another way (created before the webhook, or whose
Secret was deleted afterwards). Every problem names the field it is about, in the resource's own
camelCase path, e.g. ``spec.backends[2].credentialsRef: Secret "openai" has no key "apiKey"``.

What is checked, for a route:

- **unknown backends** (CEL covers most; repeated here defensively): names in ``models[].backends``,
  ``models[].split[].backend``, ``rules[].backends`` and ``cache.semantic.embeddingBackend`` must be
  declared in ``spec.backends``;
- **fallback cycles**: a fallback chain (``models[].backends``, ``rules[].backends``) must not list a
  backend twice — after ``a → b`` the chain would return to ``a``, retrying a backend it already gave
  up on (and double-counting its retries and circuit-breaker failures);
- **context windows**: a backend a model may use (its candidates, and the backends of the rules that
  apply to it) must offer at least the model's ``minContextWindow`` when it declares a ``contextWindow``;
- **credentials**: the referenced Secret exists in the route's namespace and has the key; a bedrock
  Secret holds both ``awsAccessKeyId`` and ``awsSecretAccessKey``.

For a budget, the soft-limit downgrade must make things cheaper:

- ``onSoftLimit.downgradeTo`` names a tier (small < medium < large) or a backend of a route in scope;
- a **tier** target caps the models of the routes in scope at that tier: it must replace something (a
  model whose preferred backend is of a higher tier), and the backend it falls to (the first candidate
  of that tier or below, in the model's order) must be cheaper than the preferred one;
- a **backend** target must be cheaper than the preferred backend of every model it replaces;
- the **ladder** must only go down: each step cheaper than the step before. A step back up to a more
  expensive (or the same) target would cycle between downgrades; that is the budget's *downgrade cycle*.

"Cheaper" compares a blended price per million tokens, 3 input tokens per output token (typical chat
traffic), so a backend cheap on input but dear on output is judged on both; a backend without
``pricing`` counts as free, as everywhere else. The "preferred" backend of a model is the first of its
``backends`` (for the weighted strategy: the split arm with the largest weight).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from llmroute_proto.api.budget import LLMBudget
from llmroute_proto.api.route import Backend, LLMRoute, LogicalModel

__all__ = [
    "AWS_KEYS",
    "TIERS",
    "Problem",
    "blended_price",
    "parse_budget",
    "parse_route",
    "referenced_secrets",
    "summarize",
    "validate_budget",
    "validate_route",
]

AWS_KEYS = ("awsAccessKeyId", "awsSecretAccessKey")
TIERS = {"small": 0, "medium": 1, "large": 2}
INPUT_SHARE = 0.75  # 3 input tokens per output token

#: A Secret's data by name, for the Secrets that exist in the route's namespace.
SecretLookup = Mapping[str, Mapping[str, str]]

# Reasons, most severe first: the Accepted condition reports the first problem's reason.
INVALID_SPEC = "InvalidSpec"
UNKNOWN_BACKEND = "UnknownBackend"
FALLBACK_CYCLE = "FallbackCycle"
DOWNGRADE_CYCLE = "DowngradeCycle"
DOWNGRADE_NOT_CHEAPER = "DowngradeNotCheaper"
CONTEXT_WINDOW = "ContextWindowTooSmall"
SECRET_NOT_FOUND = "SecretNotFound"
SECRET_KEY_MISSING = "SecretKeyNotFound"


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a resource: the field, a CamelCase reason, and what is wrong."""

    field: str
    reason: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}" if self.field else self.message


def summarize(problems: Sequence[Problem]) -> tuple[str, str]:
    """``(reason, message)`` for a condition: the first problem's reason, every message."""
    if not problems:
        return "", ""
    return problems[0].reason, "; ".join(str(p) for p in problems)


def _pydantic_problems(exc: ValidationError) -> list[Problem]:
    found = []
    for error in exc.errors(include_url=False):
        path = ""
        for part in error["loc"]:
            path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
        message = str(error["msg"]).removeprefix("Value error, ")
        found.append(Problem(path, INVALID_SPEC, message))
    return found


def parse_route(obj: Mapping[str, Any]) -> tuple[LLMRoute | None, list[Problem]]:
    """The typed route, or the schema problems that stop it from parsing."""
    try:
        return LLMRoute.model_validate(_resource(obj)), []
    except ValidationError as exc:
        return None, _pydantic_problems(exc)


def parse_budget(obj: Mapping[str, Any]) -> tuple[LLMBudget | None, list[Problem]]:
    try:
        return LLMBudget.model_validate(_resource(obj)), []
    except ValidationError as exc:
        return None, _pydantic_problems(exc)


def _resource(obj: Mapping[str, Any]) -> dict[str, Any]:
    """The fields the models know, with metadata trimmed to what the compiler reads."""
    meta = obj.get("metadata") or {}
    keep = ("name", "namespace", "generation", "labels", "uid")
    out: dict[str, Any] = {
        "apiVersion": obj.get("apiVersion", "llmroute.io/v1alpha1"),
        "kind": obj.get("kind"),
        "metadata": {k: meta[k] for k in keep if k in meta},
        "spec": obj.get("spec"),
    }
    if obj.get("status"):
        out["status"] = obj["status"]
    return out


def referenced_secrets(route: LLMRoute) -> set[str]:
    return {b.credentials_ref.name for b in route.spec.backends if b.credentials_ref is not None}


def blended_price(backend: Backend) -> float:
    """USD per million tokens at 3 input tokens per output token; no pricing is free."""
    pricing = backend.pricing
    if pricing is None:
        return 0.0
    return INPUT_SHARE * pricing.input_per_million + (1 - INPUT_SHARE) * pricing.output_per_million


def _price_text(backend: Backend) -> str:
    if backend.pricing is None:
        return "no pricing: free"
    p = backend.pricing
    return f"${p.input_per_million:g}/${p.output_per_million:g} per M in/out"


# -- routes ---------------------------------------------------------------------------------------------


def validate_route(route: LLMRoute, *, secrets: SecretLookup | None) -> list[Problem]:
    """Every problem of ``route``; ``secrets=None`` skips the credential checks."""
    problems: list[Problem] = []
    spec = route.spec
    index = {b.name: i for i, b in enumerate(spec.backends)}
    problems += _unknown_backends(route, index)
    problems += _fallback_cycles(route)
    problems += _context_windows(route, index)
    if secrets is not None:
        problems += _credentials(route, secrets)
    return problems


def _unknown_backends(route: LLMRoute, index: Mapping[str, int]) -> list[Problem]:
    found = []
    declared = ", ".join(index) or "none"

    def check(path: str, name: str) -> None:
        if name not in index:
            found.append(
                Problem(
                    path,
                    UNKNOWN_BACKEND,
                    f'backend "{name}" is not declared in spec.backends (declared: {declared})',
                )
            )

    for i, model in enumerate(route.spec.models):
        for j, name in enumerate(model.backends or []):
            check(f"spec.models[{i}].backends[{j}]", name)
        for j, arm in enumerate(model.split or []):
            check(f"spec.models[{i}].split[{j}].backend", arm.backend)
    for i, rule in enumerate(route.spec.rules or []):
        for j, name in enumerate(rule.backends):
            check(f"spec.rules[{i}].backends[{j}]", name)
    cache = route.spec.cache
    if cache is not None and cache.semantic is not None:
        check("spec.cache.semantic.embeddingBackend", cache.semantic.embedding_backend)
    return found


def _chain_cycle(paths: Sequence[str], chain: Sequence[str]) -> Problem | None:
    seen: dict[str, int] = {}
    for j, name in enumerate(chain):
        if name in seen:
            loop = " → ".join([*chain[seen[name] : j], name])
            return Problem(
                paths[j],
                FALLBACK_CYCLE,
                f'"{name}" is listed twice, so the fallback chain would cycle ({loop}); '
                "list each backend once",
            )
        seen[name] = j
    return None


def _fallback_cycles(route: LLMRoute) -> list[Problem]:
    found: list[Problem | None] = []
    for i, model in enumerate(route.spec.models):
        chain = model.backends or []
        found.append(_chain_cycle([f"spec.models[{i}].backends[{j}]" for j in range(len(chain))], chain))
        arms = [s.backend for s in model.split or []]
        found.append(_chain_cycle([f"spec.models[{i}].split[{j}].backend" for j in range(len(arms))], arms))
    for i, rule in enumerate(route.spec.rules or []):
        paths = [f"spec.rules[{i}].backends[{j}]" for j in range(len(rule.backends))]
        found.append(_chain_cycle(paths, rule.backends))
    return [p for p in found if p is not None]


def _model_candidates(route: LLMRoute, model: LogicalModel) -> list[str]:
    """Backends a model may be served by: its own, then those of the rules that apply to it."""
    names = model.backend_names()
    for rule in route.spec.rules or []:
        if rule.model is None or rule.model == model.name:
            names += [n for n in rule.backends if n not in names]
    return names


def _context_windows(route: LLMRoute, index: Mapping[str, int]) -> list[Problem]:
    found = []
    backends = route.spec.backends
    for i, model in enumerate(route.spec.models):
        minimum = model.min_context_window
        if minimum is None:
            continue
        for name in _model_candidates(route, model):
            if name not in index:
                continue
            k = index[name]
            window = backends[k].context_window
            if window is not None and window < minimum:
                found.append(
                    Problem(
                        f"spec.backends[{k}].contextWindow",
                        CONTEXT_WINDOW,
                        f"{window} tokens is below spec.models[{i}].minContextWindow ({minimum}) of model "
                        f'"{model.name}", which may route to backend "{name}"',
                    )
                )
    return found


def _credentials(route: LLMRoute, secrets: SecretLookup) -> list[Problem]:
    found = []
    namespace = str(route.metadata.get("namespace") or "")
    where = f' in namespace "{namespace}"' if namespace else ""
    for k, backend in enumerate(route.spec.backends):
        ref = backend.credentials_ref
        if ref is None:
            continue
        path = f"spec.backends[{k}].credentialsRef"
        data = secrets.get(ref.name)
        if data is None:
            found.append(Problem(path, SECRET_NOT_FOUND, f'Secret "{ref.name}" not found{where}'))
        elif backend.provider == "bedrock":
            missing = [key for key in AWS_KEYS if key not in data]
            if missing:
                keys = ", ".join(f'"{key}"' for key in missing)
                found.append(
                    Problem(
                        path,
                        SECRET_KEY_MISSING,
                        f'Secret "{ref.name}" has no key {keys}: bedrock needs awsAccessKeyId and '
                        "awsSecretAccessKey (and optionally awsSessionToken)",
                    )
                )
        elif ref.key not in data:
            found.append(Problem(path, SECRET_KEY_MISSING, f'Secret "{ref.name}" has no key "{ref.key}"'))
    return found


# -- budgets --------------------------------------------------------------------------------------------


def _preferred(route: LLMRoute, model: LogicalModel) -> Backend | None:
    by_name = {b.name: b for b in route.spec.backends}
    if model.strategy == "weighted" and model.split:
        name = max(model.split, key=lambda s: s.weight).backend
    else:
        names = model.backend_names()
        name = names[0] if names else ""
    return by_name.get(name)


def _tier_fallback(route: LLMRoute, model: LogicalModel, tier: str) -> Backend | None:
    """What a cap at ``tier`` leaves first in the model's order (None: the model is unaffected)."""
    by_name = {b.name: b for b in route.spec.backends}
    for name in model.backend_names():
        backend = by_name.get(name)
        if backend is not None and TIERS[backend.tier] <= TIERS[tier]:
            return backend
    return None


@dataclass(frozen=True)
class _Step:
    path: str
    target: str


def _scope_routes(budget: LLMBudget, routes: Sequence[LLMRoute]) -> list[LLMRoute]:
    scope = budget.spec.scope
    if scope.routes is not None:
        wanted = set(scope.routes)
        return [r for r in routes if r.metadata.get("name") in wanted]
    return list(routes)


def validate_budget(budget: LLMBudget, *, routes: Sequence[LLMRoute]) -> list[Problem]:
    """Problems of ``budget`` given the routes of its namespace (routes not yet created are skipped)."""
    action = budget.spec.on_soft_limit
    if action is None:
        return []
    scoped = _scope_routes(budget, routes)
    if not scoped:
        return []  # nothing to judge against yet; re-checked when the routes arrive
    steps = [_Step("spec.onSoftLimit.downgradeTo", action.downgrade_to)]
    steps += [
        _Step(f"spec.onSoftLimit.ladder[{i}].downgradeTo", s.downgrade_to)
        for i, s in enumerate(action.ladder or [])
    ]
    problems: list[Problem] = []
    names = ", ".join(sorted(str(r.metadata.get("name")) for r in scoped))
    for step in steps:
        if step.target not in TIERS and not any(
            b.name == step.target for r in scoped for b in r.spec.backends
        ):
            problems.append(
                Problem(
                    step.path,
                    UNKNOWN_BACKEND,
                    f'"{step.target}" is neither a tier (small, medium, large) nor a backend of the '
                    f"routes in scope ({names})",
                )
            )
    if problems:
        return problems
    problems += _first_step_cheaper(steps[0], scoped, names)
    for previous, step in itertools.pairwise(steps):
        problem = _step_cheaper(previous, step, scoped)
        if problem is not None:
            problems.append(problem)
    return problems


def _first_step_cheaper(step: _Step, scoped: Sequence[LLMRoute], names: str) -> list[Problem]:
    found = []
    capped = 0
    for route in scoped:
        route_name = route.metadata.get("name")
        by_name = {b.name: b for b in route.spec.backends}
        for model in route.spec.models:
            preferred = _preferred(route, model)
            if preferred is None:
                continue
            if step.target in TIERS:
                if TIERS[preferred.tier] <= TIERS[step.target]:
                    continue
                capped += 1
                replacement = _tier_fallback(route, model, step.target)
            else:
                replacement = by_name.get(step.target)
                if replacement is None or replacement.name == preferred.name:
                    continue
            if replacement is None:
                continue
            if blended_price(replacement) >= blended_price(preferred):
                found.append(
                    Problem(
                        step.path,
                        DOWNGRADE_NOT_CHEAPER,
                        f'"{step.target}" is not cheaper than what it replaces: model "{model.name}" of route '
                        f'"{route_name}" would go from "{preferred.name}" ({_price_text(preferred)}) to '
                        f'"{replacement.name}" ({_price_text(replacement)})',
                    )
                )
    if step.target in TIERS and capped == 0:
        found.append(
            Problem(
                step.path,
                DOWNGRADE_NOT_CHEAPER,
                f'tier "{step.target}" replaces nothing: every model of the routes in scope ({names}) already '
                f'prefers a backend of tier "{step.target}" or below',
            )
        )
    return found


def _step_cheaper(previous: _Step, step: _Step, scoped: Sequence[LLMRoute]) -> Problem | None:
    """A ladder step must be cheaper than the step before; otherwise the ladder cycles back up."""

    def cycle(detail: str) -> Problem:
        return Problem(
            step.path,
            DOWNGRADE_CYCLE,
            f'"{step.target}" is not cheaper than the step before ("{previous.target}"): {detail}; '
            "a downgrade ladder must only go down, or it cycles back to a more expensive target",
        )

    backends = {b.name: b for r in scoped for b in r.spec.backends}
    if previous.target == step.target:
        return cycle("it repeats it")
    if previous.target in TIERS and step.target in TIERS:
        if TIERS[step.target] >= TIERS[previous.target]:
            return cycle("tiers order small < medium < large")
        return None
    if previous.target in TIERS:
        target = backends[step.target]
        if TIERS[target.tier] > TIERS[previous.target]:
            return cycle(f'backend "{target.name}" is of tier "{target.tier}"')
        for route in scoped:
            for model in route.spec.models:
                if target.name not in model.backend_names():
                    continue
                before = _tier_fallback(route, model, previous.target)
                if before is not None and blended_price(target) >= blended_price(before):
                    return cycle(
                        f'model "{model.name}" would go from "{before.name}" ({_price_text(before)}) to '
                        f'"{target.name}" ({_price_text(target)})'
                    )
        return None
    before = backends[previous.target]
    if step.target in TIERS:
        if TIERS[step.target] >= TIERS[before.tier]:
            return cycle(f'backend "{before.name}" is already of tier "{before.tier}"')
        return None
    target = backends[step.target]
    if blended_price(target) >= blended_price(before):
        return cycle(f'"{target.name}" ({_price_text(target)}) vs "{before.name}" ({_price_text(before)})')
    return None
