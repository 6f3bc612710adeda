"""Building blocks shared by the ``llmroute.io/v1alpha1`` resource models.

The base model (camelCase aliases, unknown fields refused, frozen values), the scalar types that
the CRDs spell as patterned strings (durations, money, names) and the Kubernetes-convention
``Condition``. ``route.py`` and ``budget.py`` build on these; ``crdschema.py`` turns them into the
CRDs' OpenAPI schemas, so every ``description`` here ends up in ``kubectl explain``.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

__all__ = [
    "DNS_LABEL",
    "DURATION_PATTERN",
    "MONEY_PATTERN",
    "Condition",
    "DnsLabel",
    "Duration",
    "Money",
    "ResourceModel",
    "money",
    "parse_duration",
]


class ResourceModel(BaseModel):
    """Base of every spec and status model: camelCase on the wire, snake_case in Python.

    Unknown fields are refused (the API server prunes them; a typo in a standalone config file
    must not pass silently), and values are frozen so compiled configs cannot be mutated by
    accident.
    """

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
        use_attribute_docstrings=False,
    )

    def to_wire(self) -> dict[str, Any]:
        """The resource-shaped dict (camelCase, unset optional fields left out)."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


# A Kubernetes object name used as a reference between fields (RFC 1123 label).
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
# Go's time.ParseDuration subset that CEL's duration() also accepts: "200ms", "30s", "1m30s", "2h".
DURATION_PATTERN = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"
# Money as a decimal string, like a Kubernetes quantity without units: "800", "0.25".
MONEY_PATTERN = r"^[0-9]+(\.[0-9]{1,6})?$"

DnsLabel = Annotated[str, Field(min_length=1, max_length=63, pattern=DNS_LABEL)]
Duration = Annotated[str, Field(max_length=32, pattern=DURATION_PATTERN)]
Money = Annotated[str, Field(max_length=24, pattern=MONEY_PATTERN)]

_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> timedelta:
    """Parse a duration string such as ``"1m30s"`` (the same syntax the CRD's CEL rules read)."""
    if not re.fullmatch(DURATION_PATTERN, text):
        raise ValueError(f"invalid duration {text!r}: use a number with ms, s, m or h, e.g. '30s'")
    seconds = sum(float(n) * _UNIT_SECONDS[unit] for n, unit in _DURATION_PART.findall(text))
    return timedelta(seconds=seconds)


def money(text: str) -> Decimal:
    """Parse a money string exactly (no float rounding)."""
    try:
        return Decimal(text)
    except InvalidOperation as exc:
        raise ValueError(f"invalid amount {text!r}") from exc


class Condition(ResourceModel):
    """One observation of the resource's state, as Kubernetes API conventions define it."""

    type: str = Field(
        max_length=316,
        pattern=r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$",
        description="Type of condition in CamelCase, e.g. Accepted or Programmed.",
    )
    status: Literal["True", "False", "Unknown"] = Field(
        description="Status of the condition: True, False or Unknown."
    )
    observed_generation: int | None = Field(
        default=None,
        ge=0,
        description="The metadata.generation of the resource that this condition was set for.",
    )
    last_transition_time: datetime = Field(
        description="When the condition last changed from one status to another (RFC 3339).",
    )
    reason: str = Field(
        min_length=1,
        max_length=1024,
        pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$",
        description="A programmatic identifier in CamelCase for the last transition, e.g. InvalidBackendRef.",
    )
    message: str = Field(
        default="",
        max_length=32768,
        description="A human-readable message with details about the transition.",
    )
