"""The OTLP/JSON encoding, checked strictly, on top of the official protobuf classes.

OTLP/JSON is the protobuf JSON mapping with these differences (OTLP specification, "JSON
Protobuf Encoding"):

* ``traceId``, ``spanId`` and ``parentSpanId`` are hex strings (case-insensitive), not base64;
  so are a profiles ``Link``'s ``traceId`` and ``spanId`` and a ``Profile``'s ``profileId``;
* enum values are integers, never their names;
* field names are lowerCamelCase.

``google.protobuf.json_format.Parse`` alone would read a hex trace id as base64 and silently
produce the wrong bytes, and it accepts snake_case names and enum names. ``parse()`` walks the
JSON alongside the official message descriptor, rejects what OTLP/JSON forbids, turns the hex ids
into the base64 the protobuf mapping expects, and only then calls ``json_format.ParseDict`` on the
official class. So a line that passes is both valid OTLP/JSON and decoded by the official
definitions. (Receivers are told to ignore unknown fields; these tests check a sender, so unknown
names are an error.)
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

M = TypeVar("M", bound=Message)

#: bytes fields that OTLP/JSON writes as hex, with their length in bytes.
HEX_ID_FIELDS = {"trace_id": 16, "span_id": 8, "parent_span_id": 8, "profile_id": 16}

_HEX = re.compile(r"[0-9a-fA-F]*")


class OtlpJsonError(ValueError):
    """The JSON is not valid OTLP/JSON for the expected message."""


def parse(data: str | bytes | dict, message_class: Callable[[], M]) -> M:
    """Decodes one OTLP/JSON document (text or already-loaded dict) into ``message_class``."""
    obj = json.loads(data) if isinstance(data, (str, bytes)) else data
    message = message_class()
    normalized = _to_protobuf_json(obj, message.DESCRIPTOR, message.DESCRIPTOR.name)
    try:
        return json_format.ParseDict(normalized, message)
    except json_format.ParseError as e:
        raise OtlpJsonError(str(e)) from e


def to_dict(message: Message) -> dict:
    """Encodes an official message as an OTLP/JSON dict (hex ids, integer enums)."""
    obj = json_format.MessageToDict(message, use_integers_for_enums=True)
    return _ids_to_hex(obj, message.DESCRIPTOR)


def read_jsonl(path: str | Path, message_class: Callable[[], M]) -> list[M]:
    """Every non-empty line of an OTLP/JSON lines file, decoded. Errors name the line."""
    out = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                out.append(parse(line, message_class))
            except (OtlpJsonError, json.JSONDecodeError) as e:
                raise OtlpJsonError(f"{path}:{n}: {e}") from e
    return out


def _fields_by_json_name(descriptor: Descriptor) -> dict[str, FieldDescriptor]:
    return {f.json_name: f for f in descriptor.fields}


def _to_protobuf_json(obj: Any, descriptor: Descriptor, path: str) -> dict:
    """A copy of ``obj`` (a JSON object for ``descriptor``) in the protobuf JSON mapping."""
    if not isinstance(obj, dict):
        raise OtlpJsonError(f"{path}: expected a JSON object, got {type(obj).__name__}")
    fields = _fields_by_json_name(descriptor)
    out = {}
    for key, value in obj.items():
        field = fields.get(key)
        if field is None:
            hint = " (OTLP/JSON names are lowerCamelCase)" if "_" in key else ""
            raise OtlpJsonError(f"{path}: unknown field {key!r}{hint}")
        where = f"{path}.{key}"
        if field.is_repeated and value is not None:
            if not isinstance(value, list):
                raise OtlpJsonError(f"{where}: expected a JSON array")
            out[key] = [_field_value(field, v, f"{where}[{i}]") for i, v in enumerate(value)]
        else:
            out[key] = _field_value(field, value, where)
    return out


def _field_value(field: FieldDescriptor, value: Any, where: str) -> Any:
    if value is None:
        return None
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        return _to_protobuf_json(value, field.message_type, where)
    if field.type == FieldDescriptor.TYPE_ENUM:
        if not isinstance(value, int) or isinstance(value, bool):
            raise OtlpJsonError(f"{where}: enum values are integers in OTLP/JSON, got {value!r}")
        return value
    if field.type == FieldDescriptor.TYPE_BYTES and field.name in HEX_ID_FIELDS:
        return _hex_to_base64(value, HEX_ID_FIELDS[field.name], where)
    return value


def _hex_to_base64(value: Any, size: int, where: str) -> str:
    if not isinstance(value, str) or not _HEX.fullmatch(value):
        raise OtlpJsonError(f"{where}: expected a hex string, got {value!r}")
    if len(value) not in (0, 2 * size):
        raise OtlpJsonError(f"{where}: expected {2 * size} hex digits, got {len(value)}")
    return base64.b64encode(bytes.fromhex(value)).decode("ascii")


def _ids_to_hex(obj: dict, descriptor: Descriptor) -> dict:
    """In place: base64 ids (from MessageToDict) to hex, recursively."""
    fields = _fields_by_json_name(descriptor)
    for key, value in obj.items():
        field = fields[key]
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            for item in value if field.is_repeated else [value]:
                _ids_to_hex(item, field.message_type)
        elif field.type == FieldDescriptor.TYPE_BYTES and field.name in HEX_ID_FIELDS:
            obj[key] = base64.b64decode(value).hex()
    return obj
