"""Checksums and numbering-plan rules that turn a regex candidate into a PII match.

``detect.py`` finds candidates with regexes; each candidate must also pass the check here for its
type (Luhn for cards, ISO 13616 mod-97 and the country's length for IBANs, the SSA rules for SSNs,
``ipaddress`` for IPs, digit counts and NANP rules for phones). The checks are what keep near-misses
out: a regex alone matches any 16-digit order number.
"""

from __future__ import annotations

import ipaddress
from types import MappingProxyType

__all__ = [
    "IBAN_LENGTHS",
    "iban_valid",
    "ip_valid",
    "luhn_valid",
    "nanp_valid",
    "phone_digits_valid",
    "ssn_valid",
]

# Total IBAN length per country (the SWIFT IBAN registry). Checking the length as well as mod-97
# leaves a 1-in-97 chance only for strings that already look exactly like that country's IBAN.
IBAN_LENGTHS: MappingProxyType[str, int] = MappingProxyType(
    {
        "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22,
        "BI": 27, "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DJ": 27,
        "DK": 18, "DO": 28, "EE": 20, "EG": 29, "ES": 24, "FI": 18, "FK": 18, "FO": 18, "FR": 27,
        "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28, "HR": 21, "HU": 28, "IE": 22,
        "IL": 23, "IQ": 23, "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LC": 32,
        "LI": 21, "LT": 20, "LU": 20, "LV": 21, "LY": 25, "MC": 27, "MD": 24, "ME": 22, "MK": 19,
        "MN": 20, "MR": 27, "MT": 31, "MU": 30, "NI": 28, "NL": 18, "NO": 15, "OM": 23, "PK": 24,
        "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "RU": 33, "SA": 24, "SC": 31,
        "SD": 18, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "SO": 23, "ST": 25, "SV": 28, "TL": 23,
        "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20, "YE": 30,
    }
)  # fmt: skip


def luhn_valid(digits: str) -> bool:
    """The Luhn (mod 10) check every payment card number carries in its last digit."""
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = ord(char) - 48
        if position % 2:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def iban_valid(compact: str) -> bool:
    """ISO 13616: a known country, that country's length, and mod 97 of the rearranged number is 1.

    ``compact`` is upper-case with no spaces."""
    if IBAN_LENGTHS.get(compact[:2]) != len(compact):
        return False
    rearranged = compact[4:] + compact[:4]
    # int(char, 36) maps 0-9 to themselves and A-Z to 10-35, exactly the IBAN letter table.
    return int("".join(str(int(char, 36)) for char in rearranged)) % 97 == 1


def ssn_valid(area: str, group: str, serial: str) -> bool:
    """The SSA's rules: area is never 000, 666 or 900-999, group never 00, serial never 0000."""
    return area not in {"000", "666"} and area[0] != "9" and group != "00" and serial != "0000"


def ip_valid(candidate: str) -> bool:
    """Whether ``candidate`` is an IPv4 or IPv6 address as the standard library parses it (no
    leading zeros in IPv4 octets, octets 0-255, IPv6 groups and ``::`` well formed)."""
    try:
        ipaddress.ip_address(candidate)
    except ValueError:
        return False
    return True


def nanp_valid(digits: str) -> bool:
    """A North American number: optional country code 1, then area code and exchange each starting
    with 2-9 (NANP rules), so ``123-456-7890`` is not a phone number."""
    if len(digits) == 11 and digits[0] == "1":
        digits = digits[1:]
    return len(digits) == 10 and digits[0] in "23456789" and digits[3] in "23456789"


def phone_digits_valid(digits: str, *, international: bool) -> bool:
    """E.164 allows at most 15 digits; fewer than 8 (international) or 9 (national, trunk 0
    included) is a short code, an extension or just a number."""
    if international:
        return 8 <= len(digits) <= 15 and digits[0] != "0"
    return 9 <= len(digits) <= 12
