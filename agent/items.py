"""DynamoDB items as plain Python values, through boto3's own converters.

boto3 ships `TypeSerializer`/`TypeDeserializer`; the only thing they leave to the caller is
what a number becomes (they use `Decimal`). Every audit and config number here is a count, an
exit code, a duration in ms or a stage index: whole numbers come back as `int`, anything else as
`float`, so rows print as JSON without a custom encoder.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer

_serializer = TypeSerializer()
_deserializer = TypeDeserializer()


def to_attribute(value: Any) -> Any:
    """One plain value as a DynamoDB attribute value (`{"S": ...}`, `{"N": ...}`, ...)."""
    if isinstance(value, float):
        # TypeSerializer refuses floats (they are not exact); these are durations and timeouts.
        value = Decimal(str(value))
    return _serializer.serialize(value)


def to_item(values: Mapping[str, Any]) -> dict[str, Any]:
    """A plain mapping as a DynamoDB item; `None` values are left out (no NULL attributes)."""
    return {name: to_attribute(value) for name, value in values.items() if value is not None}


def from_item(item: Mapping[str, Any]) -> dict[str, Any]:
    """A DynamoDB item as plain values (numbers as int where whole, else float)."""
    return {name: _plain(_deserializer.deserialize(value)) for name, value in item.items()}


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, set):
        return sorted(_plain(v) for v in value)
    return value
