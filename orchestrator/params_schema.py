"""Params checked against a task's published JSON Schema, with no task code at hand.

A web process that submits a published pipeline has only the JSON Schema of each
task's config model (``config_model.model_json_schema()``, published by
:mod:`orchestrator.registry`). :func:`strict_schema` closes every object the model
does not open (``additionalProperties: false``, as :func:`orchestrator.validate.unknown_fields`
does for pydantic), and :func:`check_params` reports findings as the same
:class:`~orchestrator.errors.Problem` s as :mod:`orchestrator.validate`
(``task 'fetch': field 'params.pages': ...``). JSON Schema is stricter than pydantic's
lax mode: ``"5"`` is not an integer here.
"""

from __future__ import annotations

import copy
from typing import Any

import jsonschema
from jsonschema.exceptions import ValidationError, best_match

from orchestrator.errors import Problem
from orchestrator.redact import MASK, is_secret_key

MAX_PROBLEMS = 50  #: findings reported per task (a huge wrong input does not make a huge answer)
_TYPE_WORDS = {"integer": "integer", "number": "number", "string": "string", "boolean": "boolean",
               "object": "object", "array": "list", "null": "null"}  # fmt: skip


def strict_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """A copy of a pydantic JSON Schema where every model object without ``additionalProperties`` forbids extras.

    Pydantic ignores unknown keys by default (``extra='ignore'`` writes no ``additionalProperties``),
    chordflow refuses them (a typo would run silently with the default); ``extra='allow'`` models
    keep ``additionalProperties: true`` and ``dict[str, X]`` keeps its value schema.
    """
    out = copy.deepcopy(schema)
    stack: list[Any] = [out]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if "properties" in node and "additionalProperties" not in node:
                node["additionalProperties"] = False
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return out


def check_params(
    task: str, schema: dict[str, Any] | None, params: Any, secret_names: frozenset[str] = frozenset()
) -> list[Problem]:
    """Every problem of ``params`` for node ``task`` against its strict ``schema`` (None: takes no params).

    A wrong value is quoted in the message unless its field is secret (by type, name or ``secret_names``).
    """
    if schema is None:
        return [Problem(f"takes no params but got {sorted(params)}", task=task)] if params else []
    if not isinstance(params, dict):
        return [Problem(f"params must be a mapping of field to value, got {type(params).__name__}", task=task)]
    validator = jsonschema.Draft202012Validator(schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)
    problems: list[Problem] = []
    for error in sorted(validator.iter_errors(params), key=lambda e: list(map(str, e.absolute_path))):
        problems.extend(_problems(task, error, secret_names))
        if len(problems) >= MAX_PROBLEMS:
            break
    return problems[:MAX_PROBLEMS]


def _problems(task: str, error: ValidationError, secret_names: frozenset[str]) -> list[Problem]:
    if error.validator in ("anyOf", "oneOf") and error.context:
        return [p for e in _meant_branch(error) for p in _problems(task, e, secret_names)]
    path = [str(p) for p in error.absolute_path]
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        known = sorted(error.schema.get("properties", {}))
        patterns = error.schema.get("patternProperties", {})
        extras = [k for k in error.instance if k not in known and not patterns]
        return [
            Problem(f"unknown field (known: {', '.join(known) or 'none'})", task=task, field=_field([*path, k]))
            for k in extras
        ]
    if error.validator == "required":
        missing = [m for m in error.validator_value if isinstance(error.instance, dict) and m not in error.instance]
        return [Problem("required param missing", task=task, field=_field([*path, m])) for m in missing]
    return [Problem(_message(error, path, secret_names), task=task, field=_field(path))]


def _meant_branch(error: ValidationError) -> list[ValidationError]:
    """The errors of the union member the input was meant for: the first whose type fits its shape
    (``{"hots": 1}`` for ``Db | None`` is a ``Db`` with an unknown field, not a wrong ``null``)."""
    branches: dict[Any, list[ValidationError]] = {}
    for e in error.context or []:
        branches.setdefault(e.relative_schema_path[0] if e.relative_schema_path else None, []).append(e)
    for errors in branches.values():
        if not any(e.validator == "type" and not e.relative_path for e in errors):
            return errors
    return [best_match(error.context or [])]


def _field(path: list[str]) -> str:
    return ".".join(["params", *path])


def _message(error: ValidationError, path: list[str], secret_names: frozenset[str]) -> str:
    """Pydantic-like wording (what :mod:`orchestrator.validate` says), the input masked if it is secret."""
    secret = any(is_secret_key(p, secret_names) for p in path) or error.schema.get("format") == "password"
    got = MASK if secret else _short(error.instance)
    v, value = error.validator, error.validator_value
    if v == "type":
        wanted = " or ".join(_TYPE_WORDS.get(t, t) for t in (value if isinstance(value, list) else [value]))
        text = f"Input should be a valid {wanted}"
    elif v == "minimum":
        text = f"Input should be greater than or equal to {value}"
    elif v == "maximum":
        text = f"Input should be less than or equal to {value}"
    elif v == "exclusiveMinimum":
        text = f"Input should be greater than {value}"
    elif v == "exclusiveMaximum":
        text = f"Input should be less than {value}"
    elif v == "minLength":
        text = f"String should have at least {value} character{'s' if value != 1 else ''}"
    elif v == "maxLength":
        text = f"String should have at most {value} character{'s' if value != 1 else ''}"
    elif v == "enum":
        text = "Input should be " + " or ".join(repr(x) for x in value)
    elif v == "const":
        text = f"Input should be {value!r}"
    elif v == "format":
        text = f"Input should be a valid {value}"
    elif v == "pattern":
        text = f"String should match pattern '{value}'"
    else:
        text = error.message if not secret else f"Input does not satisfy '{v}'"
    return f"{text} (got {got})"


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."
