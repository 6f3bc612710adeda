"""Route rules: the first rule whose match holds replaces a model's candidates (and strategy).

A rule matches when every condition it sets holds: ``task`` equals the x-llmroute-task hint,
``tier`` the x-llmroute-tier hint, each of ``headers`` is present with exactly that value (header
names compare case-insensitively), ``complexity_above`` is below the prompt's score, and ``model``,
when set, names the requested logical model. Cheap conditions are checked first, and the
complexity score is computed (through the ``complexity`` callable) only when a rule that otherwise
matches needs it. Neighbours: ``planner.py`` calls :func:`first_match`; ``complexity.py`` scores.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from llmroute_proto.v1 import config_pb2 as pb

__all__ = ["RuleMatch", "first_match", "header_value", "rule_label"]


@dataclass(frozen=True, slots=True)
class RuleMatch:
    """The rule that matched and its position in the route's ``rules``."""

    index: int
    rule: pb.Rule

    @property
    def label(self) -> str:
        return rule_label(self.index, self.rule)


def rule_label(index: int, rule: pb.Rule) -> str:
    """The rule's name, or ``rules[i]`` for an unnamed one (for traces and metric labels)."""
    return rule.name or f"rules[{index}]"


def header_value(headers: Mapping[str, str], name: str) -> str | None:
    """A request header by name, case-insensitively: ``headers`` is case-insensitive itself (the HTTP
    server's, ``web/headers.py``) or has lower-case keys (gRPC metadata), so a lower-case lookup
    finds it."""
    return headers.get(name.lower())


def _cheap_match(rule: pb.Rule, model: str, task: str, tier: str, headers: Mapping[str, str]) -> bool:
    if rule.model and rule.model != model:
        return False
    match = rule.match
    if match.task and match.task != task:
        return False
    if match.tier and match.tier != tier:
        return False
    if not match.headers:
        return True
    return all(header_value(headers, name) == value for name, value in match.headers.items())


def first_match(
    rules: Sequence[pb.Rule],
    *,
    model: str,
    task: str,
    tier: str,
    headers: Mapping[str, str],
    complexity: Callable[[], float],
    named_only: bool = False,
) -> RuleMatch | None:
    """The first rule of ``rules`` that matches the request, or None.

    ``named_only`` skips rules that do not name ``model`` (the planner sets it for embeddings).
    """
    for index, rule in enumerate(rules):
        if named_only and rule.model != model:
            continue
        if not _cheap_match(rule, model, task, tier, headers):
            continue
        if rule.match.HasField("complexity_above") and not complexity() > rule.match.complexity_above:
            continue
        return RuleMatch(index, rule)
    return None
