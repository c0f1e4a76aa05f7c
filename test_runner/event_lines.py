"""Turning the bytes of a run's events file into events the database can store.

The events file is written by the runner on a test host, which this service does not control:
a line can be cut short, garbled, written by a different runner version, or simply not JSON.
``parse_event_lines`` never raises on any input. It keeps every line that is a JSON object valid
under ``remote_scripts/runner_events.schema.json`` and storable (PostgreSQL's ``jsonb`` refuses
NaN, infinities, the NUL character and lone surrogates; ``seq`` is a 32-bit column), and returns
every other line with the reason it was refused.

The schema is interpreted here (the subset of JSON Schema it uses: type, enum, const, required,
properties, additionalProperties, items, allOf with if/then, minimum, maximum, maxLength,
maxItems, pattern) rather than with a general validator, which would cost more per event than
the rest of the ingest path together.

NUL characters are the one thing changed rather than refused: a board printing a NUL byte (a
reset glitch) is ordinary, and dropping its serial or log event would lose the bytes around it.
They are written as the text ``\\x00``, as the runner writes undecodable bytes.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from django.utils.dateparse import parse_datetime

import remote_scripts

SCHEMA_PATH = Path(remote_scripts.__file__).resolve().parent / "runner_events.schema.json"
# RunEvent.seq and TestRun.last_seq are 32-bit integer columns.
SEQ_MAX = 2**31 - 1
EXCERPT = 120

_SURROGATE = re.compile("[\ud800-\udfff]")
# What in a line's text can make its event unstorable: a surrogate escape, or a number literal
# that may overflow a float. Lines without either (nearly all) skip the walk of _storable.
_NEEDS_WALK = re.compile(r"\\u[dD][89a-fA-F]|[eE][+]?\d{3}|\d{300}")


@dataclass(frozen=True)
class RejectedLine:
    """A line of the events file that was not kept: its 1-based number in the blob, why, and
    its start (for the log)."""

    line: int
    reason: str
    excerpt: bytes


class _Invalid(ValueError):
    pass


@cache
def event_schema() -> dict[str, Any]:
    schema: dict[str, Any] = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    return schema


def _refuse_constant(name: str) -> Any:
    raise _Invalid(f"the number {name} is not valid JSON")


def _is_type(value: Any, kind: str) -> bool:
    if kind == "object":
        return isinstance(value, dict)
    if kind == "array":
        return isinstance(value, list)
    if kind == "string":
        return isinstance(value, str)
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "null":
        return value is None
    if isinstance(value, bool):
        return False
    if kind == "integer":
        return isinstance(value, int) or (isinstance(value, float) and value.is_integer())
    if kind == "number":
        return isinstance(value, int | float)
    return False


Checker = Callable[[Any, str], None]
# A value of exactly this Python type is of this JSON type (bool is not an integer).
_EXACT_TYPES: dict[str, type] = {
    "string": str, "integer": int, "object": dict, "array": list, "boolean": bool,
}  # fmt: skip


def _compile(schema: dict[str, Any]) -> Checker:
    """A function that raises _Invalid naming the first place where a value breaks
    ``schema``. The schema is turned into closures once, so checking an event costs a few
    dictionary lookups per field (this is the ingest path's hot loop)."""
    steps: list[Checker] = []
    if "type" in schema:
        kinds = [schema["type"]] if isinstance(schema["type"], str) else list(schema["type"])
        exact = _EXACT_TYPES.get(kinds[0]) if len(kinds) == 1 else None

        def check_type(value: Any, where: str) -> None:
            if exact is not None and type(value) is exact:
                return  # the common case, decided without the general rules
            if not any(_is_type(value, kind) for kind in kinds):
                raise _Invalid(f"{where} must be {' or '.join(kinds)}, not {_describe(value)}")

        steps.append(check_type)
    if "const" in schema:
        const = schema["const"]

        def check_const(value: Any, where: str) -> None:
            if not _same(value, const):
                raise _Invalid(f"{where} must be {const!r}")

        steps.append(check_const)
    if "enum" in schema:
        options = list(schema["enum"])
        texts = frozenset(o for o in options if isinstance(o, str))

        def check_enum(value: Any, where: str) -> None:
            if type(value) is str and value in texts:
                return
            if not any(_same(value, option) for option in options):
                raise _Invalid(f"{where} must be one of {', '.join(map(str, options))}")

        steps.append(check_enum)
    if "minimum" in schema or "maximum" in schema:
        low, high = schema.get("minimum"), schema.get("maximum")

        def check_range(value: Any, where: str) -> None:
            if isinstance(value, int | float) and not isinstance(value, bool):
                if low is not None and value < low:
                    raise _Invalid(f"{where} must be at least {low}")
                if high is not None and value > high:
                    raise _Invalid(f"{where} must be at most {high}")

        steps.append(check_range)
    if "maxLength" in schema or "pattern" in schema:
        longest = schema.get("maxLength")
        pattern = re.compile(schema["pattern"]) if "pattern" in schema else None

        def check_text(value: Any, where: str) -> None:
            if isinstance(value, str):
                if longest is not None and len(value) > longest:
                    raise _Invalid(f"{where} is longer than {longest} characters")
                if pattern is not None and not pattern.search(value):
                    raise _Invalid(f"{where} does not have the expected form")

        steps.append(check_text)
    if "maxItems" in schema or "items" in schema:
        most = schema.get("maxItems")
        item_check = _compile(schema["items"]) if "items" in schema else None

        def check_list(value: Any, where: str) -> None:
            if isinstance(value, list):
                if most is not None and len(value) > most:
                    raise _Invalid(f"{where} has more than {most} items")
                if item_check is not None:
                    for index, item in enumerate(value):
                        item_check(item, f"{where}[{index}]")

        steps.append(check_list)
    if {"required", "properties", "additionalProperties"} & set(schema):
        required = list(schema.get("required", ()))
        properties = {key: _compile(sub) for key, sub in schema.get("properties", {}).items()}
        extra = schema.get("additionalProperties")
        extra_check = _compile(extra) if isinstance(extra, dict) else None

        def check_object(value: Any, where: str) -> None:
            if not isinstance(value, dict):
                return
            for key in required:
                if key not in value:
                    raise _Invalid(f"{_name(where, key)} is missing")
            for key, item in value.items():
                if key in properties:
                    properties[key](item, _name(where, key))
                elif extra_check is not None:
                    extra_check(item, _name(where, key))
                elif extra is False:
                    raise _Invalid(f"{_name(where, key)} is not allowed")

        steps.append(check_object)
    if "allOf" in schema:
        steps.append(_compile_all_of(schema["allOf"]))

    def check(value: Any, where: str) -> None:
        for step in steps:
            step(value, where)

    return check


def _compile_all_of(parts: list[dict[str, Any]]) -> Checker:
    """``allOf`` of plain schemas and ``if``/``then`` branches. When every branch is "if
    ``key`` is the text X" (the event schema's "if type is X"), the branch is found by a
    lookup instead of trying each condition."""
    branches: list[tuple[Checker | None, tuple[str, Any] | None, Checker]] = []
    for part in parts:
        condition = part.get("if")
        then = _compile(part.get("then", {})) if condition is not None else _compile(part)
        if condition is None:
            branches.append((None, None, then))
        else:
            const = _const_condition(condition)
            branches.append((None if const else _compile(condition), const, then))
    keys = {const[0] for _, const, _ in branches if const is not None}
    if len(keys) == 1 and all(
        const is not None and isinstance(const[1], str) for _, const, _ in branches
    ):
        (key,) = keys
        table: dict[str, list[Checker]] = {}
        for _, const, then in branches:
            assert const is not None
            table.setdefault(const[1], []).append(then)
        every = [then for _, _, then in branches]

        def check_by_key(value: Any, where: str) -> None:
            if not isinstance(value, dict) or key not in value:
                chosen = every  # each condition holds when the key is absent
            else:
                found = value[key]
                chosen = table.get(found, []) if isinstance(found, str) else []
            for then in chosen:
                then(value, where)

        return check_by_key

    def check_in_order(value: Any, where: str) -> None:
        for condition_check, const, then in branches:
            if const is not None:
                key, expected = const
                if isinstance(value, dict) and key in value and not _same(value[key], expected):
                    continue
            elif condition_check is not None:
                try:
                    condition_check(value, where)
                except _Invalid:
                    continue
            then(value, where)

    return check_in_order


@cache
def _event_check() -> Checker:
    return _compile(event_schema())


def _name(where: str, key: object) -> str:
    return f"{where}.{key}" if where != "event" else str(key)


def _const_condition(condition: dict[str, Any]) -> tuple[str, Any] | None:
    """``(key, value)`` for a condition of the form ``{"properties": {key: {"const": value}}}``
    (true unless the object has ``key`` with another value), else None."""
    if len(condition) != 1 or not isinstance(condition.get("properties"), dict):
        return None
    properties = condition["properties"]
    if len(properties) != 1:
        return None
    ((key, sub),) = properties.items()
    if not isinstance(sub, dict) or list(sub) != ["const"]:
        return None
    return key, sub["const"]


def _same(value: Any, expected: Any) -> bool:
    """JSON equality: true is not 1, 1 is 1.0."""
    if isinstance(value, bool) or isinstance(expected, bool):
        return type(value) is type(expected) and value == expected
    if isinstance(value, int | float) and isinstance(expected, int | float):
        return value == expected
    return type(value) is type(expected) and bool(value == expected)


def _describe(value: Any) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}.get(
        type(value), "null" if value is None else "a number"
    )


def _storable(event: dict[str, Any]) -> dict[str, Any]:
    """Checks what jsonb cannot hold; returns the event with NUL characters spelled out."""
    changed = False

    def clean(text: str) -> str:
        nonlocal changed
        if _SURROGATE.search(text):
            raise _Invalid("a string holds a lone surrogate (\\ud800-\\udfff), not Unicode text")
        if "\x00" in text:
            changed = True
            return text.replace("\x00", "\\x00")
        return text

    def walk(value: Any) -> Any:
        # Iterative over containers' depth is not needed: json.loads already bounds it.
        if isinstance(value, str):
            return clean(value)
        if isinstance(value, float) and not math.isfinite(value):
            raise _Invalid("a number is too large to store")
        if isinstance(value, list):
            return [walk(item) for item in value]
        if isinstance(value, dict):
            return {clean(str(key)): walk(item) for key, item in value.items()}
        return value

    cleaned = walk(event)
    return cleaned if changed else event


def parse_event(line: bytes) -> dict[str, Any]:
    """One line (without its newline) -> the event; raises ValueError with the reason."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _Invalid(f"not UTF-8 (byte {exc.start})") from None
    try:
        event = json.loads(text, parse_constant=_refuse_constant)
    except _Invalid:
        raise
    except RecursionError:
        raise _Invalid("not JSON: nested too deeply") from None
    except ValueError as exc:
        raise _Invalid(f"not JSON ({exc})") from None
    if not isinstance(event, dict):
        raise _Invalid(f"not a JSON object but {_describe(event)}")
    seq = event.get("seq")
    if "seq" in event and (not isinstance(seq, int) or isinstance(seq, bool)):
        raise _Invalid(f"seq must be a whole number, not {_describe(seq)} {seq!r}"[:200])
    _event_check()(event, "event")
    if event["seq"] > SEQ_MAX:
        raise _Invalid(f"seq {event['seq']} is larger than {SEQ_MAX}")
    try:
        when = parse_datetime(event["ts"])
    except ValueError:
        when = None
    if when is None:
        raise _Invalid(f"ts {event['ts']!r} is not a real date and time")
    if "\\u0000" not in text and not _NEEDS_WALK.search(text):
        return event  # no NUL, no surrogate, no number too large: storable as it is
    try:
        return _storable(event)
    except RecursionError:
        raise _Invalid("nested too deeply to store") from None


def parse_event_lines(blob: bytes) -> tuple[list[dict[str, Any]], list[RejectedLine]]:
    """Complete lines of an events file -> (events kept, lines refused with the reason).
    Blank lines are neither. Never raises."""
    events: list[dict[str, Any]] = []
    rejected: list[RejectedLine] = []
    for number, line in enumerate(blob.split(b"\n"), start=1):
        if not line.strip():
            continue
        try:
            events.append(parse_event(line.strip()))
        except ValueError as exc:
            rejected.append(RejectedLine(number, str(exc), line[:EXCERPT]))
    return events, rejected
