"""Every problem of a command that does not decode, with messages that say what to change.

The typed decoder stops at the first error and words it for programmers. When
it fails, this module walks the generic JSON/msgpack value against the same
Structs (through ``msgspec.inspect``, so the two can never disagree on what is
allowed) and collects every missing, unknown and mistyped field, each with a
hint drawn from the mistakes real callers make. It runs only on invalid
input, so it favours clear words over speed.

"Every problem" includes the rules types cannot say (uniqueness, byte limits,
fields required by ``type``): the walk notes how each problem it found could be
set aside (drop an unknown field, put a value of the right type in place of a
wrong one), and when the value so repaired decodes, :mod:`wecom_card_contracts.rules`
runs on it too. Their findings at the repaired places are dropped, so a
placeholder never speaks.
"""

from __future__ import annotations

import contextlib
import copy
import difflib
import functools
import re
from typing import Any, Final

import msgspec
from msgspec import inspect as mi

from wecom_card_contracts.command import Command
from wecom_card_contracts.hints import foreign_field_hint, type_hint, value_hint
from wecom_card_contracts.rules import check_command, mode_violation
from wecom_card_contracts.violations import Violation, ViolationKind

CARD_TYPE = "card_type"
DROP: Final = object()
"""A repair that removes the field instead of replacing its value."""
_PATH_TOKEN = re.compile(r"([^.\[\]]+)|\[(\d+)\]")
MAX_VIOLATIONS = 100
"""The walk stops after this many problems: a caller fixes a few at a time, and a
hostile body with a broken item per byte must not cost a message per byte."""


class _Enough(Exception):
    """Raised inside the walk once :data:`MAX_VIOLATIONS` problems are collected."""


def diagnose(raw: Any) -> list[Violation]:
    """All violations of a generic decoded value against :class:`Command`."""
    if not isinstance(raw, dict):
        return [
            Violation(
                ViolationKind.BODY,
                None,
                f"the body must be an object (the command), got {describe(raw)}",
            )
        ]
    walker = Walker()
    finished = False
    with contextlib.suppress(_Enough):
        walker.walk(raw, _command_info(), "", "the command")
        finished = True
    request = raw.get("request")
    if isinstance(request, dict):
        walker.check_mode(request)
    if not finished:
        return walker.violations  # enough said: a body this broken is not repaired
    return walker.violations + rules_beyond(raw, walker)


def rules_beyond(raw: dict[Any, Any], walker: Walker) -> list[Violation]:
    """The rules' findings on the command with the walk's problems set aside, if it decodes."""
    try:
        repaired = copy.deepcopy(raw)
        if not all(apply_repair(repaired, path, value) for path, value in walker.repairs):
            return []
        command = msgspec.convert(repaired, Command)
    except (msgspec.ValidationError, TypeError, ValueError, RecursionError):
        return []  # a problem the walk could not set aside; its own report stands
    reported = [v.path for v in walker.violations if v.path]
    return [v for v in check_command(command) if not under_any(v.path, reported)]


def under_any(path: str | None, places: list[str]) -> bool:
    """Whether ``path`` is one of ``places`` or inside one of them."""
    if path is None:
        return True
    return any(path == p or path.startswith((f"{p}.", f"{p}[")) for p in places)


def apply_repair(value: Any, path: str, replacement: Any) -> bool:
    """Replace (or with :data:`DROP` remove) the value at ``path``; False when it cannot."""
    tokens: list[str | int] = [name or int(index) for name, index in _PATH_TOKEN.findall(path)]
    if (
        not tokens
        or "".join(f"[{t}]" if isinstance(t, int) else f".{t}" for t in tokens).lstrip(".") != path
    ):
        return False  # a field name with dots or brackets: not worth guessing
    *parents, last = tokens
    for token in parents:
        try:
            value = value[token]
        except (KeyError, IndexError, TypeError):
            return False
    if isinstance(last, str) and isinstance(value, dict):
        if replacement is DROP:
            value.pop(last, None)
        else:
            value[last] = replacement
        return True
    if isinstance(last, int) and isinstance(value, list) and last < len(value):
        if replacement is DROP:
            return False  # removing an item would move the indexes of the rest
        value[last] = replacement
        return True
    return False


def placeholder(t: mi.Type) -> Any:
    """A value of type ``t`` within its bounds, or :data:`DROP` when none is simple."""
    inner = unwrap(t)
    if isinstance(inner, mi.UnionType):
        members = [m for m in inner.types if not isinstance(unwrap(m), mi.NoneType)]
        return placeholder(members[0]) if len(members) == 1 else DROP
    if isinstance(inner, mi.StrType):
        return "x" * max(1, inner.min_length or 0)
    if isinstance(inner, mi.BoolType):
        return False
    if isinstance(inner, mi.IntType | mi.FloatType):
        number = inner.ge if inner.ge is not None else (inner.gt + 1 if inner.gt is not None else 0)
        high = inner.le if inner.le is not None else inner.lt
        if high is not None and number > high:
            return DROP
        return float(number) if isinstance(inner, mi.FloatType) else int(number)
    return DROP


@functools.cache
def _command_info() -> mi.Type:
    return mi.type_info(Command)


@functools.cache
def field_locations() -> dict[str, tuple[str, ...]]:
    """Where each field name of the whole command is allowed, in words."""
    places: dict[str, list[str]] = {}

    def visit(t: mi.Type, where: str) -> None:
        t = unwrap(t)
        if isinstance(t, mi.UnionType):
            for member in t.types:
                visit(member, where)
        elif isinstance(t, mi.ListType):
            visit(t.item_type, where)
        elif isinstance(t, mi.StructType):
            label = f"{t.tag} cards" if isinstance(t.tag, str) else where
            for f in t.fields:
                places.setdefault(f.encode_name, [])
                if label not in places[f.encode_name]:
                    places[f.encode_name].append(label)
                visit(f.type, f"{where}.{f.encode_name}".lstrip("."))

    visit(_command_info(), "")
    return {name: tuple(labels) for name, labels in places.items()}


def unwrap(t: mi.Type) -> mi.Type:
    """The type inside ``Annotated`` metadata."""
    while isinstance(t, mi.Metadata):
        t = t.type
    return t


def description_of(t: mi.Type) -> str | None:
    """The ``Meta(description=...)`` of a field's type, if any."""
    while isinstance(t, mi.Metadata):
        schema = t.extra_json_schema or {}
        if "description" in schema:
            return str(schema["description"])
        t = t.type
    return None


def describe(value: Any) -> str:
    """A value's JSON type in words, with the value itself when short."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, int | float):
        return f"the number {value}"
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:37] + "..."
        return f"the string {shown!r}"
    if isinstance(value, list | tuple):
        return f"a list of {len(value)} items"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, bytes | bytearray | memoryview):
        return "binary data"
    return f"a {type(value).__name__} value"


EXPECTED = {
    mi.IntType: "an integer",
    mi.FloatType: "a number",
    mi.StrType: "a string",
    mi.BoolType: "true or false",
    mi.ListType: "a list",
    mi.StructType: "an object",
}


def join(path: str, name: str) -> str:
    """``a.b`` from ``a`` and ``b``; ``b`` at the root."""
    return f"{path}.{name}" if path else name


class Walker:
    """One walk over a generic value, collecting violations."""

    def __init__(self) -> None:
        self.violations: list[Violation] = []
        self.repairs: list[tuple[str, Any]] = []
        """How to set each problem aside: (path, a value of the right type or DROP)."""

    def add(self, kind: ViolationKind, path: str, message: str) -> None:
        """Record one violation; stop the walk once there are enough."""
        self.violations.append(Violation(kind, path or None, message))
        if len(self.violations) >= MAX_VIOLATIONS:
            raise _Enough

    def walk(self, value: Any, t: mi.Type, path: str, here: str) -> None:
        """Check ``value`` against ``t``; ``here`` names the place in words."""
        inner = unwrap(t)
        if isinstance(inner, mi.UnionType):
            members = [m for m in inner.types if not isinstance(unwrap(m), mi.NoneType)]
            if value is None:
                return  # null for an optional field: same as absent
            structs = [unwrap(m) for m in members]
            if len(structs) > 1 and all(isinstance(s, mi.StructType) for s in structs):
                self.walk_tagged(value, [s for s in structs if isinstance(s, mi.StructType)], path)
                return
            inner_t = members[0] if len(members) == 1 else t
            self.walk(value, inner_t, path, here)
            return
        if isinstance(inner, mi.StructType):
            if not isinstance(value, dict):
                self.wrong_type(value, t, path)
                return
            self.walk_struct(value, inner, path, here)
        elif isinstance(inner, mi.ListType):
            self.walk_list(value, t, inner, path)
        else:
            self.walk_scalar(value, t, inner, path)

    def walk_tagged(self, value: Any, structs: list[mi.StructType], path: str) -> None:
        """A card: ``card_type`` picks the Struct to check against."""
        if not isinstance(value, dict):
            self.add(
                ViolationKind.TYPE, path, f"expected an object (a card), got {describe(value)}"
            )
            return
        tags = [s.tag for s in structs]
        names = ", ".join(str(tag) for tag in tags)
        tag = value.get(CARD_TYPE)
        if tag is None or tag == "":
            self.add(
                ViolationKind.MISSING,
                join(path, CARD_TYPE),
                f"{CARD_TYPE} is required: one of {names}",
            )
            return
        match = next((s for s in structs if s.tag == tag), None)
        if match is None:
            self.add(
                ViolationKind.VALUE,
                join(path, CARD_TYPE),
                f"unknown {CARD_TYPE} {describe(tag)}; use one of {names}",
            )
            return
        self.walk_struct(value, match, path, f"a {tag} card")

    def walk_struct(self, value: dict[Any, Any], t: mi.StructType, path: str, here: str) -> None:
        """Fields of one object: unknown, missing, then each value."""
        fields = {f.encode_name: f for f in t.fields}
        for key, item in value.items():
            if t.tag_field is not None and key == t.tag_field:
                continue
            field = fields.get(key) if isinstance(key, str) else None
            if field is None:
                self.unknown(key, t, path, here)
                continue
            sub = join(path, key)
            empty_text = item == "" and isinstance(unwrap(field.type), mi.StrType)
            if item is None or empty_text:
                if field.required:
                    self.missing(field, sub, here, value_was=item)
                continue
            self.walk(item, field.type, sub, sub)
        for field in t.fields:
            if field.required and field.encode_name not in value:
                self.missing(field, join(path, field.encode_name), here, value_was=...)

    def walk_list(self, value: Any, t: mi.Type, inner: mi.ListType, path: str) -> None:
        """A list: its type, its length, then each item."""
        if not isinstance(value, list | tuple):
            self.wrong_type(value, t, path)
            return
        name = path.rsplit(".", 1)[-1]
        if inner.min_length and not value:
            self.add(ViolationKind.MISSING, path, f"{name} must not be empty")
        elif inner.min_length is not None and len(value) < inner.min_length:
            self.add(
                ViolationKind.VALUE,
                path,
                f"{name} has {len(value)} items; at least {inner.min_length} are required",
            )
        if inner.max_length is not None and len(value) > inner.max_length:
            self.add(
                ViolationKind.VALUE,
                path,
                f"{name} has {len(value)} items; the seed allows at most {inner.max_length}",
            )
        # Items past the limit are not looked at: the list must shrink to it anyway.
        for i, item in enumerate(value[: inner.max_length]):
            self.walk(item, inner.item_type, f"{path}[{i}]", f"{path}[{i}]")

    def walk_scalar(self, value: Any, t: mi.Type, inner: mi.Type, path: str) -> None:
        """Strings, numbers, booleans: type, then range or length."""
        ok = (
            (isinstance(inner, mi.StrType) and isinstance(value, str))
            or (isinstance(inner, mi.BoolType) and isinstance(value, bool))
            or (
                isinstance(inner, mi.IntType)
                and isinstance(value, int)
                and not isinstance(value, bool)
            )
            or (
                isinstance(inner, mi.FloatType)
                and isinstance(value, int | float)
                and not isinstance(value, bool)
            )
            or isinstance(inner, mi.AnyType)
        )
        if not ok:
            self.wrong_type(value, t, path)
            return
        problem = out_of_range(value, inner)
        if problem is not None:
            self.repairs.append((path, placeholder(t)))
            name = path.rsplit(".", 1)[-1]
            meaning = description_of(t)
            extra = value_hint(path, value)
            text = f"{name} {problem}" + (f" ({meaning})" if meaning else "")
            self.add(ViolationKind.VALUE, path, text + (f"; {extra}" if extra else ""))

    def wrong_type(self, value: Any, t: mi.Type, path: str) -> None:
        """A value of the wrong JSON type, with how to write it instead."""
        self.repairs.append((path, placeholder(t)))
        inner = unwrap(t)
        expected = EXPECTED.get(type(inner), "another type")
        if isinstance(inner, mi.ListType):
            item = EXPECTED.get(type(unwrap(inner.item_type)), "values")
            expected = f"a list of {item.removeprefix('an ').removeprefix('a ')}s"
        name = path.rsplit(".", 1)[-1] if path else "the command"
        message = f"{name} must be {expected}, got {describe(value)}"
        hint = type_hint(path, value, inner)
        self.add(ViolationKind.TYPE, path, message + (f"; {hint}" if hint else ""))

    def missing(self, field: mi.Field, path: str, here: str, value_was: Any) -> None:
        """A required field that is absent, null or empty."""
        self.repairs.append((path, placeholder(field.type)))
        how = {None: "is null", "": "is an empty string"}.get(value_was, "is missing")
        if value_was is ...:
            how = "is missing"
        name = path.rsplit(".", 1)[-1]
        parent = path.rsplit(".", 1)[0] if "." in path else "the command"
        if here.endswith(" card"):
            parent = f"{parent} ({here})"
        hint = ""
        if isinstance(unwrap(field.type), mi.BoolType):
            hint = "; set it to true or false (serializers that drop false values leave it out)"
        self.add(
            ViolationKind.MISSING,
            path,
            f"required field {name} {how} in {parent} (the seed marks it 是){hint}",
        )

    def unknown(self, key: Any, t: mi.StructType, path: str, here: str) -> None:
        """A field this object does not have, with where it belongs when we know."""
        sub = join(path, str(key))
        self.repairs.append((sub, DROP))
        if not isinstance(key, str):
            self.add(
                ViolationKind.UNKNOWN, sub, f"field names must be strings, got {describe(key)}"
            )
            return
        allowed = [f.encode_name for f in t.fields]
        foreign = foreign_field_hint(key, path)
        if foreign is not None:
            self.add(ViolationKind.UNKNOWN, sub, f"unknown field {key} in {here}: {foreign}")
            return
        elsewhere = [p for p in field_locations().get(key, ()) if p not in here]
        if isinstance(t.tag, str) and elsewhere:
            cards = [p.removesuffix(" cards") for p in elsewhere if p.endswith(" cards")]
            if cards:
                self.add(
                    ViolationKind.UNKNOWN,
                    sub,
                    f"{key} is not a field of {t.tag} cards; it belongs to "
                    f"{' and '.join(cards)} cards. Remove it, or change card_type",
                )
                return
        suggestion = close_field(key, allowed, path)
        if suggestion is not None:
            message = f"unknown field {key} in {here}; did you mean {suggestion}?"
        elif elsewhere:
            message = (
                f"unknown field {key} in {here}; {key} belongs to "
                f"{', '.join(elsewhere)}, not here. Move or remove it"
            )
        else:
            message = (
                f"unknown field {key} in {here}; remove it (fields allowed here: "
                f"{', '.join(sorted(allowed))})"
            )
        self.add(ViolationKind.UNKNOWN, sub, message)

    def check_mode(self, request: dict[Any, Any]) -> None:
        """R-MODE on the generic value."""
        shape = mode_violation(
            has_button=request.get("button") is not None,
            has_card=request.get("template_card") is not None,
        )
        if shape is not None:
            self.violations.append(shape)


def out_of_range(value: Any, t: mi.Type) -> str | None:
    """How a number or string breaks its type's bounds, in words; ``None`` when it does not."""
    if isinstance(t, mi.StrType):
        if t.min_length is not None and len(value) < t.min_length:
            return f"must have at least {t.min_length} characters"
        if t.max_length is not None and len(value) > t.max_length:
            return f"must have at most {t.max_length} characters, it has {len(value)}"
        return None
    if not isinstance(t, mi.IntType | mi.FloatType):
        return None
    low = f">= {t.ge}" if t.ge is not None else (f"> {t.gt}" if t.gt is not None else None)
    high = f"<= {t.le}" if t.le is not None else (f"< {t.lt}" if t.lt is not None else None)
    broken = (
        (t.ge is not None and value < t.ge)
        or (t.gt is not None and value <= t.gt)
        or (t.le is not None and value > t.le)
        or (t.lt is not None and value >= t.lt)
    )
    if not broken:
        return None
    bounds = " and ".join(b for b in (low, high) if b)
    return f"must be {bounds}, got {value}"


def close_field(key: str, allowed: list[str], path: str) -> str | None:
    """The field the caller most likely meant: a prefixed name or a near spelling."""
    parent = path.rsplit(".", 1)[-1].split("[", 1)[0]
    if parent and key.startswith(parent + "_") and key[len(parent) + 1 :] in allowed:
        return key[len(parent) + 1 :]
    lowered = key.lower().replace("-", "_")
    if lowered in allowed:
        return lowered
    camel = "".join("_" + c.lower() if c.isupper() else c for c in key).lstrip("_")
    if camel in allowed:
        return camel
    matches = difflib.get_close_matches(key, allowed, n=1, cutoff=0.75)
    return matches[0] if matches else None


def first_error_path(error: msgspec.ValidationError) -> str | None:
    """The path in a msgspec error (``... - at `$.request.agentid```) in our notation."""
    text = str(error)
    marker = " - at `$"
    if marker not in text:
        return None
    return text.rsplit(marker, 1)[1].rstrip("`").lstrip(".") or None
