"""The one formatter of configuration errors (:func:`config_error`): a pydantic error about a settings model becomes
``<key.path>: <what is wrong>; expected <form>, e.g. <example>``, for the daemon's settings and plugin options alike.

The expected form comes from the field's type and constraints (or its ``json_schema_extra={"expected": ...}``, see
:func:`expected_extra`), the example from its ``examples``, else its default. A value is never echoed into an error
when it is a secret or came from ``${...}``.
"""

from __future__ import annotations

import types
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, SecretBytes, SecretStr
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails, PydanticUndefined

from delivery_daemon.errors import ConfigError, DeliveryDaemonError

ENV_START = "${"
"""How an environment reference (``${NAME}``) starts."""


def expected_extra(expected: str) -> dict[str, Any]:
    """``json_schema_extra`` for a field whose expected form its type does not say (read by :func:`config_error`)."""
    return {"expected": expected}


class Invalid(DeliveryDaemonError, ValueError):
    """A validator's complaint that knows what it wanted. ``key`` (relative to where the validator runs) names the
    key at fault when a whole section is checked; ``expected``/``example`` override the field's own."""

    def __init__(self, problem: str, expected: str | None = None, example: str | None = None, key: str = "") -> None:
        super().__init__(problem)
        self.problem = problem
        self.expected = expected
        self.example = example
        self.key = key


def format_location(loc: tuple[int | str, ...]) -> str:
    """``("stores", 0, "api_key")`` → ``stores[0].api_key``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _join(prefix: str, path: str) -> str:
    if not prefix or not path:
        return prefix or path
    return prefix + path if path.startswith("[") else f"{prefix}.{path}"


def _unwrap(annotation: Any) -> Any:
    """``Annotated[X, ...]`` and ``X | None`` → ``X``."""
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            annotation = get_args(annotation)[0]
        elif (
            origin in (Union, types.UnionType)
            and len(members := [a for a in get_args(annotation) if a is not type(None)]) == 1
        ):
            annotation = members[0]
        else:
            return annotation


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _spot(model: type[BaseModel], loc: tuple[int | str, ...]) -> tuple[Any, FieldInfo | None, str, Any]:
    """What the value at ``loc`` should be: ``(annotation, field when loc ends at a model field, key, parent model)``.
    An unknown key gives annotation None and the model it was found in."""
    annotation: Any = model
    field: FieldInfo | None = None
    key, parent = "", None
    for part in loc:
        annotation = _unwrap(annotation)
        origin = get_origin(annotation)
        if _is_model(annotation) and isinstance(part, str):
            parent, key, field = annotation, part, annotation.model_fields.get(part)
            if field is None:
                return None, None, key, parent
            annotation = field.annotation
        elif origin is dict and isinstance(part, str):
            annotation, field = get_args(annotation)[1], None
        elif origin in (list, tuple, set, frozenset) and isinstance(part, int):
            annotation, field = get_args(annotation)[0], None
        elif origin in (Union, types.UnionType):
            continue  # pydantic's tag for one member of a union: the union as a whole is expected
        else:
            return Any, None, key, parent
    return annotation, field, key, parent


def _limits(field: FieldInfo | None) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for item in field.metadata if field is not None else ():
        for name in ("gt", "ge", "lt", "le", "min_length", "max_length", "pattern"):
            if getattr(item, name, None) is not None:
                found[name] = getattr(item, name)
    return found


def _render(value: Any) -> str:
    """A value as it would be typed in the YAML file."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_render(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_render(v)}" for k, v in value.items()) + "}"
    return str(value) if value != "" else '""'


def _bounds(limits: dict[str, Any]) -> str:
    if "ge" in limits and "le" in limits:
        return f" from {_render(limits['ge'])} to {_render(limits['le'])}"
    words = {"gt": "greater than", "ge": "at least", "lt": "less than", "le": "at most"}
    said = [f"{word} {_render(limits[name])}" for name, word in words.items() if name in limits]
    return (" " + " and ".join(said)) if said else ""


def _form_of(annotation: Any, field: FieldInfo | None = None) -> str:
    """The expected form of a value of ``annotation`` (with the field's constraints), in words."""
    annotation = _unwrap(annotation)
    origin, limits = get_origin(annotation), _limits(field)
    if origin is Literal:
        return "one of " + ", ".join(_render(choice) for choice in get_args(annotation))
    if annotation is bool:
        return "true or false"
    if annotation is int:
        return "a whole number" + _bounds(limits)
    if annotation is float:
        return "a number" + _bounds(limits)
    if annotation in (SecretStr, SecretBytes):
        return "a secret, best given as ${ENV_VAR}"
    if annotation is str:
        if "pattern" in limits:
            return f"text matching {limits['pattern']}"
        if limits.get("min_length") == 1:
            return "text (not empty)"
        if limits.get("min_length"):
            return f"text of at least {limits['min_length']} characters"
        return "text" + (f" of at most {limits['max_length']} characters" if "max_length" in limits else "")
    if _is_model(annotation):
        required = [name for name, info in annotation.model_fields.items() if info.is_required()]
        return "a mapping" + (
            f" with {' and '.join(required)} set"
            if required
            else f" with any of the keys {', '.join(annotation.model_fields)}"
        )
    if origin is dict:
        return "a mapping of names to " + _form_of(get_args(annotation)[1])
    if origin in (list, tuple, set, frozenset):
        return "a list, each " + _form_of(get_args(annotation)[0])
    if origin in (Union, types.UnionType):
        return " or ".join(_form_of(member) for member in get_args(annotation) if member is not type(None))
    return "a value"


def _example_of(annotation: Any, field: FieldInfo | None = None, key: str = "") -> str:
    """A value of ``annotation`` one could type: the field's first example, else its default, else one made up."""
    if field is not None:
        if field.examples:
            return _render(field.examples[0])
        default = field.get_default(call_default_factory=True)
        if default not in (None, PydanticUndefined, "", (), [], {}) and not isinstance(default, BaseModel):
            return _render(default)
    annotation = _unwrap(annotation)
    origin, limits = get_origin(annotation), _limits(field)
    if origin is Literal:
        return _render(get_args(annotation)[0])
    if annotation is bool:
        return "true"
    if annotation in (int, float):
        low = limits.get("ge", limits["gt"] + 1 if "gt" in limits else 1)
        return _render(min(low, limits.get("le", low)))
    if annotation in (SecretStr, SecretBytes):
        return "${" + (key.upper() or "SECRET") + "}"
    if _is_model(annotation):
        fields = annotation.model_fields
        shown = [name for name, info in fields.items() if info.is_required()] or list(fields)[:2]
        return (
            "{"
            + ", ".join(f"{name}: {_example_of(fields[name].annotation, fields[name], name)}" for name in shown)
            + "}"
        )
    if origin is dict:
        return "{name: " + _example_of(get_args(annotation)[1]) + "}"
    if origin in (list, tuple, set, frozenset):
        return "[" + _example_of(get_args(annotation)[0]) + "]"
    if origin in (Union, types.UnionType):
        return _example_of(next(m for m in get_args(annotation) if m is not type(None)))
    return "..."


def _expected(annotation: Any, field: FieldInfo | None) -> str:
    extra = field.json_schema_extra if field is not None else None
    if isinstance(extra, dict) and isinstance(extra.get("expected"), str):
        return str(extra["expected"])
    return _form_of(annotation, field)


def expect(model: type[BaseModel], *loc: int | str) -> tuple[str, str]:
    """``(expected form, example)`` of the value at ``loc`` in ``model``, for a ConfigError raised outside
    validation (e.g. a key an adapter requires): ``ConfigError(path, "required", *expect(StoreSettings, "api_key"))``.
    """
    annotation, field, key, _parent = _spot(model, loc)
    return _expected(annotation, field), _example_of(annotation, field, key)


def one_of(value: str, choices: list[str], fallback: str = "") -> tuple[str, str]:
    """``(expected, example)`` for a name that is not among ``choices``: the list, and the closest name."""
    import difflib  # only when a value is wrong: not held by every process that starts well (memory, issue #26 item 5)

    close = difflib.get_close_matches(value, choices, n=1)
    example = close[0] if close else fallback if fallback in choices else choices[0] if choices else fallback
    return "one of " + (", ".join(choices) or "(none installed)"), example


def _raw_at(document: Any, loc: tuple[int | str, ...]) -> Any:
    for part in loc:
        try:
            document = document[part]
        except (KeyError, IndexError, TypeError):
            return None
    return document


def _got(value: Any, echo: bool) -> str:
    """The wrong input, described; its value only when ``echo`` (never a secret, nor a value from ``${...}``)."""
    if isinstance(value, bool) or value is None:
        return _render(value)
    if isinstance(value, int | float):
        return f"the number {_render(value)}" if echo else "a number"
    if isinstance(value, str):
        return f"text {value[:40]!r}" if echo else "text"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    return type(value).__name__


def config_error(error: ErrorDetails, model: type[BaseModel], prefix: str = "", document: Any = None) -> ConfigError:
    """One pydantic error about ``model`` as ``<key.path>: <what is wrong>; expected <form>, e.g. <example>``.

    ``prefix`` is the key path of the document ``model`` validated (e.g. ``stores[0].default.options``);
    ``document`` is that document as written, before ``${...}`` was resolved (so such values are never echoed).
    """
    loc = tuple(error["loc"])
    annotation, field, key, parent = _spot(model, loc)
    kind = error["type"]
    cause = (error.get("ctx") or {}).get("error")
    path = _join(prefix, format_location(loc))
    raw = _raw_at(document, loc)
    secret = _unwrap(annotation) in (SecretStr, SecretBytes) or (isinstance(raw, str) and ENV_START in raw)
    shown = _got(error.get("input"), echo=not secret)
    if isinstance(raw, str) and ENV_START in raw:
        shown += f" (from {raw[:60]})"  # the reference as written, never the value it resolved to
    if kind == "extra_forbidden" and parent is not None:
        return ConfigError(path, "unknown key", *one_of(key, list(parent.model_fields)))
    expected, example = _expected(annotation, field), _example_of(annotation, field, key)
    if isinstance(cause, Invalid):
        return ConfigError(_join(path, cause.key), cause.problem, cause.expected or expected, cause.example or example)
    problems = {
        "missing": "required",
        "literal_error": f"{shown} is not one of the choices",
        "greater_than": f"{shown} is too small",
        "greater_than_equal": f"{shown} is too small",
        "less_than": f"{shown} is too large",
        "less_than_equal": f"{shown} is too large",
        "string_pattern_mismatch": "not in the expected form",
        "string_too_short": "too short",
        "string_too_long": "too long",
    }
    if kind in problems:
        problem = problems[kind]
    elif cause is not None:
        problem = str(cause)
    elif kind.endswith(("_type", "_parsing")):
        problem = f"got {shown}"
    else:
        message = str(error["msg"])
        problem = message[:1].lower() + message[1:]
    return ConfigError(path, problem, expected, example)
