"""PII detection: a table of positives and near-misses per type, and properties of find_pii over
any text (never raises; sorted, non-overlapping, in-bounds spans)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmroute_sidecar.pii import PII_TYPES, PiiMatch, find_pii

ALL = frozenset(PII_TYPES)

# (text, the (type, value) pairs find_pii must return for all types). An empty list is a near-miss.
CASES: list[tuple[str, list[tuple[str, str]]]] = [
    # email
    ("write to jane.doe@example.com today", [("email", "jane.doe@example.com")]),
    ("j.o'hara? no: ops+alerts@mail.example.co.uk.", [("email", "ops+alerts@mail.example.co.uk")]),
    ("user_1%x@sub-domain.example.org", [("email", "user_1%x@sub-domain.example.org")]),
    ("ping me on @jane or at team@", []),
    ("local host admin@localhost is no public address", []),
    ("a dot-ended local part jane.@example.com", []),
    ("twice .. in jane..doe@example.com", []),
    ("the decorator @app.route('/x') is code", []),
    # phone
    ("call +49 30 1234567 now", [("phone", "+49 30 1234567")]),
    ("US office +1 (415) 555-0132.", [("phone", "+1 (415) 555-0132")]),
    ("cell 415-555-0132", [("phone", "415-555-0132")]),
    ("desk (415) 555-0132 ext", [("phone", "(415) 555-0132")]),
    ("Berlin 030 1234567", [("phone", "030 1234567")]),
    ("Paris 06 12 34 56 78", [("phone", "06 12 34 56 78")]),
    ("toll free 1-800-555-0199", [("phone", "1-800-555-0199")]),
    ("Munich (089) 1234567 or 030/1234567", [("phone", "(089) 1234567"), ("phone", "030/1234567")]),
    ("letters 1-800-FLOWERS and local 555-0132", []),
    ("London +44 20 7946 0958", [("phone", "+44 20 7946 0958")]),
    ("with trunk +49 (0)30 1234567", [("phone", "+49 (0)30 1234567")]),
    ("compact +4930123456", [("phone", "+4930123456")]),
    ("released on 2024-01-15", []),
    ("date 15.01.2024 and 01-02-2024", []),
    ("upgrade to 10.0.1 or 2.31.0", []),
    ("fake NANP 123-456-7890", []),
    ("we had 42 tickets and 1234567 rows", []),
    ("order #20240115-7781 shipped", []),
    ("at 12:30:45 UTC on 2024-01-15T12:30:45Z", []),
    ("price $1,299.99 or 1.299,99 EUR", []),
    ("score +5 points", []),
    # credit_card
    ("card 4111 1111 1111 1111 exp 12/27", [("credit_card", "4111 1111 1111 1111")]),
    (
        "reach me on +44 20 7946 0958 4111 1111 1111 1111",
        [("phone", "+44 20 7946 0958"), ("credit_card", "4111 1111 1111 1111")],
    ),
    (  # found by Hypothesis: the longest valid prefix ran into the SSN and the phone was lost
        "+1 (415) 555-0132 0 123-45-6789",
        [("phone", "+1 (415) 555-0132 0"), ("ssn", "123-45-6789")],
    ),
    ("card 4111-1111-1111-1111", [("credit_card", "4111-1111-1111-1111")]),
    ("card 4111111111111111", [("credit_card", "4111111111111111")]),
    ("amex 3782 822463 10005", [("credit_card", "3782 822463 10005")]),
    ("mastercard 5555555555554444.", [("credit_card", "5555555555554444")]),
    ("diners 3056 930902 5904", [("credit_card", "3056 930902 5904")]),
    ("bad Luhn 4111 1111 1111 1112", []),
    ("bad Luhn 4111111111111112", []),
    ("mixed separators 4111 1111-1111 1111", []),
    ("ISBN 9783161484100 and 978-3-16-148410-0", []),
    ("tracking 1Z999AA10123456784", []),
    ("amount 4111111111111111.50 is no card", []),
    # ssn
    ("SSN 123-45-6789", [("ssn", "123-45-6789")]),
    ("ssn: 078-05-1120.", [("ssn", "078-05-1120")]),
    ("area 000 000-12-3456", []),
    ("area 666 666-12-3456", []),
    ("area 9xx 912-34-5678", []),
    ("group 00 123-00-4567", []),
    ("serial 0000 123-45-0000", []),
    ("part of a longer code 123-45-6789-01", []),
    # iban
    ("IBAN DE89 3704 0044 0532 0130 00", [("iban", "DE89 3704 0044 0532 0130 00")]),
    ("iban DE89370400440532013000.", [("iban", "DE89370400440532013000")]),
    ("GB82 WEST 1234 5698 7654 32 is mine", [("iban", "GB82 WEST 1234 5698 7654 32")]),
    ("NL91ABNA0417164300 and more", [("iban", "NL91ABNA0417164300")]),
    ("DE89 3704 0044 0532 0130 00 ABCD follows", [("iban", "DE89 3704 0044 0532 0130 00")]),
    ("bad checksum DE88 3704 0044 0532 0130 00", []),
    ("wrong length DE89 3704 0044 0532 0130 0", []),
    ("unknown country ZZ89 3704 0044 0532 0130 00", []),
    # ip
    ("server 192.168.1.20 is down", [("ip", "192.168.1.20")]),
    ("dotted quad 1.2.3.4 counts as an IP", [("ip", "1.2.3.4")]),
    ("v6 2001:db8::1 and ::1", [("ip", "2001:db8::1"), ("ip", "::1")]),
    ("mapped ::ffff:192.0.2.1", [("ip", "::ffff:192.0.2.1")]),
    ("full 2001:0db8:85a3:0000:0000:8a2e:0370:7334.", [("ip", "2001:0db8:85a3:0000:0000:8a2e:0370:7334")]),
    ("http://10.0.0.1:8080/path", [("ip", "10.0.0.1")]),
    ("octet out of range 999.1.1.1 and 256.0.0.1", []),
    ("five parts 1.2.3.4.5 and v1.2.3.4", []),
    ("leading zero 010.0.0.1", []),
    ("C++ std::vector and abc::def", []),
    ("MAC 00:1A:2B:3C:4D:5E", []),
    ("zone fe80::1%eth0", [("ip", "fe80::1")]),
    ("literal a@[10.0.0.1]", [("ip", "10.0.0.1")]),
    # several in one text
    (
        "Jane (jane@example.com, +1 (415) 555-0132) paid with 4111 1111 1111 1111 from 10.1.2.3",
        [
            ("email", "jane@example.com"),
            ("phone", "+1 (415) 555-0132"),
            ("credit_card", "4111 1111 1111 1111"),
            ("ip", "10.1.2.3"),
        ],
    ),
]


@pytest.mark.parametrize(("text", "expected"), CASES, ids=[case[0][:40] for case in CASES])
def test_detects_exactly(text: str, expected: list[tuple[str, str]]) -> None:
    found = [(match.type, text[match.start : match.end]) for match in find_pii(text, ALL)]
    assert found == expected


def test_only_requested_types() -> None:
    text = "jane@example.com 4111 1111 1111 1111"
    assert [match.type for match in find_pii(text, frozenset({"credit_card"}))] == ["credit_card"]
    assert find_pii(text, frozenset()) == []
    assert find_pii(text, frozenset({"passport"})) == []


def test_near_miss_card_is_not_a_phone() -> None:
    # Luhn-invalid, and every trunk-0 grouping of it would otherwise look like a national number.
    assert find_pii("0123 4567 8901 2345", ALL) == []
    assert find_pii("card 5105 1051 0510 5101", frozenset({"phone"})) == []


def test_match_repr_never_shows_the_value() -> None:
    text = "secret jane@example.com"
    [match] = find_pii(text, ALL)
    assert "jane" not in repr(match)
    assert match == PiiMatch("email", 7, 23)


# Text that is mostly digits and separators finds the regexes' edge cases fastest.
pii_alphabet = st.text(alphabet="0123456789 -.:+()@/abcdefDEXZ_%\n", max_size=200)


@settings(max_examples=400, deadline=None)
@given(text=st.one_of(st.text(max_size=300), pii_alphabet))
def test_spans_sorted_non_overlapping_in_bounds(text: str) -> None:
    matches = find_pii(text, ALL)
    previous_end = 0
    for match in matches:
        assert match.type in PII_TYPES
        assert 0 <= previous_end <= match.start < match.end <= len(text)
        previous_end = match.end


@settings(max_examples=200, deadline=None)
@given(
    text=pii_alphabet,
    types=st.frozensets(st.sampled_from([*PII_TYPES, "unknown"])),
)
def test_subsets_of_types_never_raise(text: str, types: frozenset[str]) -> None:
    assert all(match.type in types for match in find_pii(text, types))
