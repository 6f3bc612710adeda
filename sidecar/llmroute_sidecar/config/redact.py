"""Secret redaction for anything that prints a config: ``/config_dump``, logs, errors.

Fields carrying secret material are marked ``[(llmroute.v1.sensitive) = true]`` in the proto, so
redaction walks descriptors instead of keeping a list of names that could fall out of date.
"""

from __future__ import annotations

from typing import Any

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message

from llmroute_proto.v1 import annotations_pb2

__all__ = ["REDACTED", "redacted_dict"]

REDACTED = "<redacted>"


def redacted_dict(message: Message) -> dict[str, Any]:
    """``message`` as a JSON-ready dict with every sensitive field's value replaced."""
    copy = type(message)()
    copy.CopyFrom(message)
    _scrub(copy)
    return MessageToDict(copy, preserving_proto_field_name=True)


def _scrub(message: Message) -> None:
    for field, value in message.ListFields():
        if field.GetOptions().Extensions[annotations_pb2.sensitive]:
            if field.type == FieldDescriptor.TYPE_STRING and value:
                setattr(message, field.name, REDACTED)
            continue
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            if field.message_type is not None and field.message_type.GetOptions().map_entry:
                continue
            if field.is_repeated:
                for item in value:
                    _scrub(item)
            else:
                _scrub(value)
