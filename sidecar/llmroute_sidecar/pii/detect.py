"""PII detection: where personal data sits in a piece of prompt text.

Each type has one regex that finds candidates and one check in ``checks.py`` that a candidate must
pass (a checksum or a numbering-plan rule). :func:`find_pii` runs the requested types in a fixed
precedence, most specific first, and drops any later candidate that overlaps an earlier match, so
the result never overlaps. ``redact.py`` turns the matches into placeholders; ``chat.py`` feeds it
the texts of a chat body. ``docs/pii.md`` explains each rule and what is deliberately not detected.

All patterns are compiled with ``re.ASCII``: ``\\d`` must mean 0-9, or a run of Arabic-Indic
digits would reach the Luhn check.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from .checks import (
    IBAN_LENGTHS,
    iban_valid,
    ip_valid,
    luhn_valid,
    nanp_valid,
    phone_digits_valid,
    ssn_valid,
)

__all__ = ["PII_TYPES", "PiiMatch", "find_pii"]

PII_TYPES: tuple[str, ...] = ("email", "phone", "credit_card", "ssn", "iban", "ip")


@dataclass(frozen=True)
class PiiMatch:
    """One detected value: its type and its span in the text. The value itself is never kept, so
    a match can be logged or put in a metric label without leaking what it found."""

    type: str
    start: int
    end: int


# Emails are found from their "@" outwards (see _emails): scanning every word for a local part
# costs more than all the other detectors together.
_LOCAL_PART = re.compile(r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9_%+-]+(?:\.[A-Za-z0-9_%+-]+)*\Z", re.ASCII)
_DOMAIN = re.compile(
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}(?![A-Za-z0-9-]|\.[A-Za-z0-9])",
    re.ASCII,
)
# Every pattern below opens with a lookahead for its first character: re skips ahead on it, where
# a leading lookbehind alone would be tried at every position (2-3x slower).
# Groups of four with optional single spaces, as printed on statements, or no spaces at all.
_IBAN = re.compile(
    r"(?=[A-Z])(?<![A-Za-z0-9])[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?(?![A-Za-z0-9])",
    re.ASCII,
)
# Contiguous, 4-4-4-4 or Amex/Diners 4-6-5/4-6-4 with one consistent separator; the first digit is
# a card network's (2-6), which keeps ISBNs (978...), and most order numbers, out.
_CARD = re.compile(
    r"(?=[2-6])(?<![\w.,+-])(?:"
    r"[2-6]\d{12,18}"
    r"|[2-6]\d{3}(?P<sep>[ -])\d{4}(?P=sep)\d{4}(?P=sep)\d{4}(?!(?P=sep)\d{4})"
    r"|3\d{3}(?P<amex>[ -])\d{6}(?P=amex)\d{4,5}"
    r")(?!\w|[.,]\d)",
    re.ASCII,
)
_SSN = re.compile(r"(?=\d)(?<![\w.-])(\d{3})-(\d{2})-(\d{4})(?!\w|-\d)", re.ASCII)
_IPV4 = re.compile(r"(?=\d)(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?!\w|\.\d)", re.ASCII)
_IPV6 = re.compile(
    r"(?=[0-9A-Fa-f:])(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:\d{1,3}(?:\.\d{1,3}){3}|[0-9A-Fa-f]{1,4})?(?![\w:]|\.\d)",
    re.ASCII,
)
_PHONE = re.compile(
    r"(?=[+(0-9])(?<![\w+.-])(?:"
    # International: +country code, then groups, a (0) trunk or (area) allowed.
    r"(\+[1-9]\d{0,2}(?:[ .-]?(?:\(\d{1,4}\)|\d{1,5})){1,7})"
    # North American: (415) 555-0132, 415-555-0132, 415.555.0132, 1-800-555-0199.
    r"|((?:1[ .-])?(?:\(\d{3}\) ?|\d{3}[ .-])\d{3}[ .-]\d{4})"
    # National with trunk 0: 030 1234567, 030/1234567, (030) 1234567, 06 12 34 56 78.
    r"|((?:\(0[1-9]\d{0,3}\) ?|0[1-9]\d{0,3}(?:[ -]|/ ?))\d{2,8}(?:[ -]\d{2,8}){0,3})"
    r")(?!\w|[.,/-]?\d)",
    re.ASCII,
)
_NON_DIGITS = re.compile(r"\D", re.ASCII)
_GROUP_BREAK = re.compile(r"[ .-](?=[(0-9])", re.ASCII)
_ANY_DIGIT = re.compile(r"[0-9]")

_Span = tuple[int, int]


class _Scan:
    """One text and the regex matches found in it so far: card, IBAN and SSN candidates serve both
    their own detector and the phone detector's exclusions, and are searched for once."""

    def __init__(self, text: str) -> None:
        self.text = text
        self._found: dict[re.Pattern[str], list[re.Match[str]]] = {}

    def matches(self, pattern: re.Pattern[str]) -> list[re.Match[str]]:
        found = self._found.get(pattern)
        if found is None:
            found = self._found[pattern] = list(pattern.finditer(self.text))
        return found


def _emails(scan: _Scan) -> Iterator[_Span]:
    text = scan.text
    at = text.find("@")
    while at != -1:
        # RFC 5321 caps the local part at 64 characters; the lookbehind sees past the window, so a
        # longer run fails instead of matching its last 64 characters.
        local = _LOCAL_PART.search(text, max(0, at - 64), at)
        domain = _DOMAIN.match(text, at + 1) if local is not None else None
        if local is not None and domain is not None:
            yield local.start(), domain.end()
            at = text.find("@", domain.end())
        else:
            at = text.find("@", at + 1)


def _ibans(scan: _Scan) -> Iterator[_Span]:
    for match in scan.matches(_IBAN):
        span = _iban_span(match.group(), match.start())
        if span is not None:
            yield span


def _iban_span(candidate: str, start: int) -> _Span | None:
    """The span of the valid IBAN at the start of ``candidate``. The regex is greedy, so a
    following upper-case word of four letters may have joined the last group: trim to the
    country's length, at a space, and check that."""
    compact = candidate.replace(" ", "")
    if iban_valid(compact):
        return start, start + len(candidate)
    length = IBAN_LENGTHS.get(compact[:2])
    if length is None or len(compact) <= length or not iban_valid(compact[:length]):
        return None
    seen = 0
    for offset, char in enumerate(candidate):
        if char != " ":
            seen += 1
            if seen == length:
                end = offset + 1
                return (start, start + end) if candidate[end] == " " else None
    return None


def _cards(scan: _Scan) -> Iterator[_Span]:
    for match in scan.matches(_CARD):
        if luhn_valid(_NON_DIGITS.sub("", match.group())):
            yield match.span()


def _ssns(scan: _Scan) -> Iterator[_Span]:
    for match in scan.matches(_SSN):
        if ssn_valid(match[1], match[2], match[3]):
            yield match.span()


def _ips(scan: _Scan) -> Iterator[_Span]:
    text = scan.text
    # No "::" and fewer than seven colons: no IPv6 address can be in there.
    ipv6 = "::" in text or text.count(":") >= 7
    for match in _IPV6.finditer(text) if ipv6 else ():
        candidate = match.group()
        # Times (12:30:45) and MAC addresses have no "::" and fewer or more than 8 groups; code
        # like ``abc::def`` has no digit. Only then is it worth asking ``ipaddress``.
        if (
            ("::" in candidate or candidate.count(":") == 7)
            and any(char.isdigit() for char in candidate)
            and ip_valid(candidate)
        ):
            yield match.span()
    # After IPv6, so that ::ffff:192.0.2.1 is one IPv6 address, not an IPv4 one in a prefix.
    for match in _IPV4.finditer(text):
        if ip_valid(match.group()):
            yield match.span()


def _phones(scan: _Scan) -> Iterator[_Span]:
    shapes: list[int] | None = None  # where card-, IBAN- and SSN-shaped candidates start
    for match in scan.matches(_PHONE):
        candidate = match.group()
        if candidate[0] == "+":
            # The groups repeat greedily, so a number followed by other digits (a card number, a
            # count) is one long candidate: take the longest prefix, at a group boundary, that is a
            # valid number, so "+44 20 7946 0958 4111 1111 1111 1111" still finds the phone. The
            # prefix must end before any card, IBAN or SSN shape that starts inside the candidate
            # ("+1 (415) 555-0132 0 123-45-6789"): a prefix into it would be dropped as overlapping,
            # and the phone with it.
            start = match.start()
            if shapes is None:
                shapes = sorted(span[0] for span in _shapes(scan))
            limit = min((s for s in shapes if start < s < match.end()), default=match.end()) - start
            cuts = [m.start() for m in _GROUP_BREAK.finditer(candidate)] + [len(candidate)]
            for cut in reversed([c for c in cuts if c <= limit]):
                # A "(0)" is the national trunk prefix written beside the country code: not dialled.
                digits = _NON_DIGITS.sub("", candidate[:cut].replace("(0)", ""))
                if phone_digits_valid(digits, international=True):
                    yield start, start + cut
                    break
            continue
        # Judged by the digits, not by which branch matched: "030 123 4567" has the NANP shape
        # but is a national number with a trunk 0.
        digits = _NON_DIGITS.sub("", candidate)
        ok = nanp_valid(digits) or (digits[0] == "0" and phone_digits_valid(digits, international=False))
        if ok:
            yield match.span()


def _shapes(scan: _Scan) -> Iterator[_Span]:
    """Card-, IBAN- and SSN-shaped candidates whether or not their checks hold: a card number with
    a typo is still not a phone number."""
    for pattern in (_CARD, _IBAN, _SSN):
        for match in scan.matches(pattern):
            yield match.span()


# Most specific first: an email's domain may hold an IP-looking label, an IBAN holds card-length
# digit runs, and phone formats are the loosest of all.
_DETECTORS: tuple[tuple[str, Callable[[_Scan], Iterator[_Span]]], ...] = (
    ("email", _emails),
    ("iban", _ibans),
    ("credit_card", _cards),
    ("ssn", _ssns),
    ("ip", _ips),
    ("phone", _phones),
)


class _Taken:
    """Accepted spans, kept sorted by start, for overlap checks in O(log n)."""

    def __init__(self) -> None:
        self.starts: list[int] = []
        self.ends: list[int] = []

    def overlaps(self, start: int, end: int) -> bool:
        index = bisect.bisect_left(self.starts, end)
        return index > 0 and self.ends[index - 1] > start

    def add(self, start: int, end: int) -> None:
        index = bisect.bisect_left(self.starts, start)
        self.starts.insert(index, start)
        self.ends.insert(index, end)


def find_pii(text: str, types: frozenset[str]) -> list[PiiMatch]:
    """Every match of the requested ``types`` in ``text``, non-overlapping, sorted by start.
    Unknown type names are ignored."""
    taken = _Taken()
    matches: list[PiiMatch] = []
    scan = _Scan(text)
    # Every type but email needs an ASCII digit (IBAN check digits, IPv6 by the rule above); one
    # C-speed search spares prose six regex passes.
    digits = _ANY_DIGIT.search(text) is not None
    for kind, detector in _DETECTORS:
        if kind not in types or (kind != "email" and not digits):
            continue
        if kind == "phone":
            for start, end in _shapes(scan):
                if not taken.overlaps(start, end):
                    taken.add(start, end)
        for start, end in detector(scan):
            if not taken.overlaps(start, end):
                taken.add(start, end)
                matches.append(PiiMatch(kind, start, end))
    matches.sort(key=lambda match: match.start)
    return matches
