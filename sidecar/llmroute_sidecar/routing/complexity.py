"""How hard a chat request looks, as a score in [0, 1] with the features that make it up.

The score is a sum of bounded feature contributions, so it explains itself: every decision trace
and debug header can say "0.61 = code 0.30 + reasoning 0.20 + length 0.08 + constraints 0.03".
Features and their caps (the caps add up to 1):

============  =====  ==========================================================================
feature       cap    evidence
============  =====  ==========================================================================
length        0.15   estimated input tokens, on a log scale from 50 (nothing) to 8,000 (full)
code          0.30   code fences, definitions, imports, braces, programming words (3 hits: full)
reasoning     0.30   maths symbols, arithmetic and LaTeX, proof/analysis words (3 hits: full)
constraints   0.10   must/never/only/at least/no more than..., list items (6 hits: full)
depth         0.075  conversation turns before the newest (10: full)
tools         0.075  tool definitions offered (half for any, full at 5)
============  =====  ==========================================================================

Markers are searched in the newest user turn only: that is the task at hand, while system prompts
are mostly the same for every request of an app and would shift all scores alike. Marker words
count once each (distinct words), phrases and lines each time. At most :data:`MAX_SCAN` characters
are scanned (head and tail of a longer turn), so the cost stays bounded (a few µs to ~20 µs).
Neighbours: ``tokens.py`` supplies the length, ``strategies.py`` and ``rules.py`` use the score.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import Any

from llmroute_proto.v1 import config_pb2 as pb

__all__ = ["DEFAULT_MEDIUM", "DEFAULT_SMALL", "MAX_SCAN", "Complexity", "score", "tier_for", "tier_name"]

MAX_SCAN = 1500
DEFAULT_SMALL = 0.3
DEFAULT_MEDIUM = 0.7

_LENGTH_CAP, _CODE_CAP, _REASONING_CAP, _CONSTRAINT_CAP, _DEPTH_CAP, _TOOLS_CAP = (
    0.15,
    0.30,
    0.30,
    0.10,
    0.075,
    0.075,
)
_LENGTH_FLOOR, _LENGTH_FULL = math.log(50), math.log(8000)


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


# Markers, counted cheaply: a regex of word alternatives costs ~100 µs on a short prompt, these a
# few. Distinct marker words by set intersection with the words of the lower-cased text; phrases by
# substring counts; code structure and list items line by line (a few lines settle it: the features
# saturate, so at most _MAX_LINES lines are looked at).
_CODE_WORDS = _words(
    "python javascript typescript java rust golang kotlin swift c++ c# sql regex bash shell "
    "powershell compile compiler compiles compiling exception traceback stacktrace segfault "
    "refactor debug unittest pytest api json yaml dockerfile kubernetes"
)
_REASONING_WORDS = _words(
    "prove proof derive derivation theorem lemma reason reasoning analyze analyse analysis "
    "compare tradeoff tradeoffs evaluate optimize optimise algorithm complexity justify "
    "calculate integral derivative equation probability hypothesis why"
)
_CONSTRAINT_WORDS = _words("must should exactly only without ensure never always require required requires")
# Phrases, each behind a cheap gate (a word of the text, or a character) so absent ones cost nothing.
_REASONING_PHRASES = (("step", ("step by step", "step-by-step")), ("trade", ("trade-off", "trade off")))
_CONSTRAINT_PHRASES = (
    ("least", ("at least",)),
    ("most", ("at most",)),
    ("than", ("no more than", "no less than")),
    ("not", ("do not", "must not")),
    ("don", ("don't",)),
)
_GATES = frozenset(gate for gate, _ in _REASONING_PHRASES + _CONSTRAINT_PHRASES)
_ALL_WORDS = _CODE_WORDS | _REASONING_WORDS | _CONSTRAINT_WORDS | _GATES
_LATEX = ("\\frac", "\\sum", "\\int", "\\sqrt")
_CODE_STARTS = (
    "#include",
    *(f"{w} " for w in _words("def class import function fn func public private select const package")),
)
_LIST_STARTS = ("- ", "* ", "• ")
_NUMBERED = re.compile(r"\d{1,2}[.)] ")
_MATHS_SYMBOLS = re.compile("[∑∫√≤≥≠∀∃∂π]")
_ARITHMETIC = re.compile(r"\d[ \t]*[\^*/][ \t]*\d")
_MAX_LINES = 40
# Word splitting: ASCII punctuation (but the + and # of c++ and c#, and _) becomes a space.
_SEPARATORS = str.maketrans(dict.fromkeys("!\"$%&'()*,-./:;<=>?@[\\]^`{|}~", " "))
_VALUE = itemgetter(1)
_TIER_NAMES: dict[int, str] = {pb.TIER_SMALL: "small", pb.TIER_MEDIUM: "medium", pb.TIER_LARGE: "large"}


@dataclass(frozen=True, slots=True)
class Complexity:
    """A score and the contribution of each feature to it (largest first)."""

    score: float
    features: tuple[tuple[str, float], ...]

    def top(self, n: int = 3) -> tuple[tuple[str, float], ...]:
        """The ``n`` largest non-zero contributions."""
        return tuple((name, value) for name, value in self.features[:n] if value > 0)

    def explain(self) -> str:
        """``"0.61 = code 0.30 + reasoning 0.20 + ..."``, for logs and traces."""
        parts = " + ".join(f"{name} {value:.2f}" for name, value in self.features if value >= 0.005)
        return f"{self.score:.2f} = {parts or 'nothing'}"


def _newest_user_text(messages: Sequence[Any]) -> str:
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, str):
                return content
            if isinstance(content, list):
                return "\n".join(
                    str(p.get("text") or "")
                    for p in content
                    if isinstance(p, dict) and p.get("type") == "text"
                )
            return ""
    return ""


def _clip(text: str) -> str:
    if len(text) <= MAX_SCAN:
        return text
    half = MAX_SCAN // 2
    return text[:half] + "\n" + text[-half:]


def _phrases(lowered: str, gates: frozenset[str], table: tuple[tuple[str, tuple[str, ...]], ...]) -> int:
    return sum(lowered.count(p) for gate, phrases in table if gate in gates for p in phrases)


def _markers(text: str) -> tuple[int, int, int]:
    """(code, reasoning, constraint) marker counts of ``text``."""
    if not text:
        return 0, 0, 0
    lowered = text.lower()
    # One C-level pass over the words finds every marker and gate word; the few hits are sorted out.
    found = _ALL_WORDS.intersection(lowered.translate(_SEPARATORS).split())
    gates = found & _GATES
    code = len(found & _CODE_WORDS)
    if "`" in text:
        code += text.count("```")
    if ">" in text:
        code += text.count("=>")
    reasoning = len(found & _REASONING_WORDS) + _phrases(lowered, gates, _REASONING_PHRASES)
    if "\\" in text:
        reasoning += sum(lowered.count(p) for p in _LATEX)
    if not text.isascii():
        reasoning += len(_MATHS_SYMBOLS.findall(text))
    if "^" in text or "*" in text or "/" in text:
        reasoning += len(_ARITHMETIC.findall(text))
    constraints = len(found & _CONSTRAINT_WORDS) + _phrases(lowered, gates, _CONSTRAINT_PHRASES)
    if "\n" in text:
        for line in lowered.splitlines()[:_MAX_LINES]:
            line = line.strip()
            if not line:
                continue
            if line.startswith(_CODE_STARTS) or line[-1] in "{};":
                code += 1
            elif line.startswith(_LIST_STARTS) or _NUMBERED.match(line):
                constraints += 1
    return code, reasoning, constraints


def score(body: Mapping[str, Any], input_tokens: int) -> Complexity:
    """Score a chat request; ``input_tokens`` comes from ``tokens.estimate_chat``."""
    raw_messages = body.get("messages")
    messages: Sequence[Any] = raw_messages if isinstance(raw_messages, list) else ()
    code, reasoning, constraints = _markers(_clip(_newest_user_text(messages)))
    # Turns: messages other than the system/developer prompt, which leads the conversation.
    pinned = 0
    for m in messages[:3]:
        if isinstance(m, dict) and m.get("role") in ("system", "developer"):
            pinned += 1
    turns = len(messages) - pinned
    tools = body.get("tools") or body.get("functions")
    n_tools = len(tools) if isinstance(tools, list) else 0
    length = 0.0
    if input_tokens > 50:
        length = min(1.0, (math.log(input_tokens) - _LENGTH_FLOOR) / (_LENGTH_FULL - _LENGTH_FLOOR))
    features = (
        ("length", _LENGTH_CAP * length),
        ("code", _CODE_CAP * min(1.0, code / 3)),
        ("reasoning", _REASONING_CAP * min(1.0, reasoning / 3)),
        ("constraints", _CONSTRAINT_CAP * min(1.0, constraints / 6)),
        ("depth", _DEPTH_CAP * min(1.0, max(0, turns - 1) / 10)),
        ("tools", (_TOOLS_CAP / 2) * (1 + min(1.0, (n_tools - 1) / 4)) if n_tools else 0.0),
    )
    total = sum(value for _, value in features)
    # Rounded, so a score on a threshold does not flip with the order of float additions.
    return Complexity(round(min(1.0, total), 4), tuple(sorted(features, key=_VALUE, reverse=True)))


def tier_for(value: float, thresholds: pb.ComplexityThresholds | None) -> int:
    """The tier (``pb.TIER_*``) for a score: below ``small`` is small, below ``medium`` medium."""
    small, medium = DEFAULT_SMALL, DEFAULT_MEDIUM
    if thresholds is not None and (thresholds.small or thresholds.medium):
        small, medium = thresholds.small, max(thresholds.small, thresholds.medium)
    if value < small:
        return pb.TIER_SMALL
    if value < medium:
        return pb.TIER_MEDIUM
    return pb.TIER_LARGE


def tier_name(tier: int) -> str:
    return _TIER_NAMES.get(tier, "unspecified")
