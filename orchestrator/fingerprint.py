"""C5: the fingerprint of a node, and why two fingerprints differ.

A node's fingerprint is the sha256 of canonical JSON (sorted keys, no NaN,
never pickle) of its *parts*: task name, task version, validated params (minus
``cache_ignore``; secret values are left out: they do not change what a task
computes, and a hash of a password must not land in ``metadata.json``), the
fingerprints of its upstream nodes, the content hash of every declared input
file, and optionally the function's source. Upstream *fingerprints* (not
results) make every fingerprint known at submit, so the client decides every
cache hit in one round trip; a changed ancestor changes every descendant.

Pure: no Celery, no Redis. Files are read through :class:`FileHasher`, which
remembers hashes by (path, size, mtime_ns) so an unchanged large file is not
read again.
"""

from __future__ import annotations

import datetime as dt
import decimal
import enum
import hashlib
import hmac
import inspect
import json
import math
import os
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Any

from pydantic import BaseModel, SecretBytes, SecretStr

from orchestrator.errors import PipelineInvalid, Problem
from orchestrator.model import Pipeline
from orchestrator.plan import ExecutionPlan

SECRET = "<secret>"
CHUNK = 1 << 20


class Unhashable(ValueError):
    """A value has no canonical JSON form; ``path`` says where it is."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


def canonical(value: Any, path: str = "") -> Any:
    """``value`` as plain JSON data (dicts, lists, str, finite numbers, bool, None), or :class:`Unhashable`."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise Unhashable(path, f"{value!r} has no JSON form (NaN/Infinity)")
        return value
    if isinstance(value, SecretStr | SecretBytes):
        return SECRET
    if isinstance(value, BaseModel):
        return canonical(value.model_dump(), path)
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise Unhashable(f"{path}.{k!r}".lstrip("."), f"mapping key of type {type(k).__name__} is not a string")
            out[k] = canonical(v, f"{path}.{k}".lstrip("."))
        return out
    if isinstance(value, list | tuple):
        return [canonical(v, f"{path}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, set | frozenset):
        items = [canonical(v, f"{path}[]") for v in value]
        return sorted(items, key=dumps)
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, enum.Enum):
        return canonical(value.value, path)
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, decimal.Decimal | uuid.UUID):
        return str(value)
    kind = type(value).__name__
    raise Unhashable(path, f"a value of type {kind} cannot be hashed canonically (JSON-like values only)")


def dumps(value: Any) -> str:
    """Canonical JSON text: sorted keys, no spaces, NaN refused."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def digest(parts: Mapping[str, Any]) -> str:
    return hashlib.sha256(dumps(parts).encode()).hexdigest()


class FileHasher:
    """Content hashes of files and directories, remembered by (path, size, mtime_ns).

    ``cache_file`` (optional) keeps them between invocations as a small JSON file.
    """

    def __init__(self, cache_file: Path | None = None) -> None:
        self.cache_file = cache_file
        self.reads = 0  #: files actually read (tests check that an unchanged file is not)
        self._memo: dict[str, list[Any]] = {}
        self._dirty = False
        self._loaded = cache_file is None  #: the cache file is read when a file is first hashed, not before

    def _load(self) -> None:
        self._loaded = True
        try:
            self._memo = json.loads(self.cache_file.read_text()) if self.cache_file is not None else {}
        except (OSError, ValueError):
            self._memo = {}

    def file(self, path: Path) -> str:
        if not self._loaded:
            self._load()
        st = path.stat()
        key = str(path)
        hit = self._memo.get(key)
        if hit and hit[0] == st.st_size and hit[1] == st.st_mtime_ns:
            return str(hit[2])
        h = hashlib.sha256()
        with path.open("rb") as f:
            while chunk := f.read(CHUNK):
                h.update(chunk)
        self.reads += 1
        self._memo[key] = [st.st_size, st.st_mtime_ns, h.hexdigest()]
        self._dirty = True
        return h.hexdigest()

    def path(self, path: Path) -> str:
        """sha256 of a file's bytes, or of a directory's sorted (relative path, file hash) list."""
        path = path.resolve()
        if path.is_file():
            return self.file(path)
        if path.is_dir():
            h = hashlib.sha256()
            for sub in sorted(p for p in path.rglob("*") if p.is_file()):
                h.update(f"{sub.relative_to(path).as_posix()}\0{self.file(sub)}\n".encode())
            return h.hexdigest()
        raise FileNotFoundError(f"{path} does not exist")

    def save(self) -> None:
        if self.cache_file is None or not self._dirty:
            return
        try:
            self.cache_file.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.cache_file.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(self._memo))
            os.replace(tmp, self.cache_file)
            self._dirty = False
        except OSError:
            pass  # only a speed-up


@dataclass(frozen=True)
class Fingerprint:
    digest: str
    parts: dict[str, Any]


def fingerprint_plan(
    pipeline: Pipeline, plan: ExecutionPlan, hasher: FileHasher | None = None, secret_key: bytes = b""
) -> dict[str, Fingerprint]:
    """The fingerprint of every node, parents first.

    Secret params (``SecretStr``/``SecretBytes``) are shown as ``<secret>`` in the parts, but their values
    enter the digest as an HMAC under ``secret_key`` (kept in Redis, see :func:`orchestrator.cache.secret_key`):
    two runs that differ only in a credential never share a cache entry, and no stored part reveals it.

    Raises:
        PipelineInvalid: a param or input file cannot be hashed (names the task and the field).
    """
    hasher = hasher or FileHasher()
    specs = {n.name: n.spec for n in pipeline.nodes}
    out: dict[str, Fingerprint] = {}
    problems: list[Problem] = []
    for name in plan.order:
        spec, node = specs[name], plan.nodes[name]
        try:
            params = _validated(spec.config_model, node.params)
            inputs = {}
            for field in spec.inputs:
                inputs[field] = _hash_input(hasher, params.get(field), field)
            for field in spec.cache_ignore:
                params.pop(field, None)
            parts: dict[str, Any] = {
                "task": spec.name,
                "version": spec.version,
                "params": canonical(params, "params"),
                "upstream": {p: out[p].digest for p in node.parents},
                "inputs": inputs,
            }
            if spec.cache_source:
                parts["source"] = _source_hash(spec.fn)
            secrets = _secret_values(params)
            if secrets:
                parts["secrets"] = hmac.new(secret_key, dumps(secrets).encode(), hashlib.sha256).hexdigest()
        except Unhashable as exc:
            problems.append(Problem(f"cannot fingerprint for the cache: {exc.reason}", task=name, field=exc.path))
            continue
        except KeyError:
            continue  # a parent already failed
        out[name] = Fingerprint(digest(parts), parts)
    hasher.save()
    if problems:
        raise PipelineInvalid(problems)
    return out


def _secret_values(value: Any) -> list[str]:
    """The values of the secrets in ``value`` (any depth), in a stable order."""
    if isinstance(value, SecretStr):
        return [value.get_secret_value()]
    if isinstance(value, SecretBytes):
        return [value.get_secret_value().hex()]
    if isinstance(value, BaseModel):
        return _secret_values(value.model_dump())
    if isinstance(value, Mapping):
        return [s for k in sorted(value, key=str) for s in _secret_values(value[k])]
    if isinstance(value, list | tuple):
        return [s for v in value for s in _secret_values(v)]
    return []


def _validated(model: type[BaseModel] | None, params: Mapping[str, Any]) -> dict[str, Any]:
    if model is None:
        return dict(params)
    return dict(model.model_validate(dict(params)).model_dump())


def _hash_input(hasher: FileHasher, value: Any, field: str) -> Any:
    if value is None:
        return None
    if isinstance(value, list | tuple):
        return [_hash_input(hasher, v, f"{field}[{i}]") for i, v in enumerate(value)]
    if not isinstance(value, str | PurePath):
        raise Unhashable(f"params.{field}", f"declared as an input file but holds a {type(value).__name__}")
    try:
        return {"path": str(value), "sha256": hasher.path(Path(value))}
    except OSError as exc:
        raise Unhashable(f"params.{field}", f"input file {str(value)!r} cannot be read: {exc}") from None


def _source_hash(fn: Any) -> str:
    try:
        return hashlib.sha256(inspect.getsource(fn).encode()).hexdigest()
    except (OSError, TypeError) as exc:
        raise Unhashable("source", f"cache_source=True but the source is not available: {exc}") from None


def explain(now: Mapping[str, Any], last: Mapping[str, Any] | None) -> list[str]:
    """Why a node with parts ``now`` does not match the last recorded parts: one reason per change."""
    if not last:
        return ["no earlier run"]
    reasons = []
    if now.get("task") != last.get("task"):
        reasons.append(f"task changed ({last.get('task')} -> {now.get('task')})")
    if now.get("version") != last.get("version"):
        reasons.append(f"version bump ({last.get('version')} -> {now.get('version')})")
    reasons += _diff("param", now.get("params") or {}, last.get("params") or {})
    for field in sorted(set(now.get("inputs") or {}) | set(last.get("inputs") or {})):
        a, b = (now.get("inputs") or {}).get(field), (last.get("inputs") or {}).get(field)
        if a != b:
            path = a.get("path") if isinstance(a, dict) else field
            reasons.append(f"input file '{path}' changed")
    for parent in sorted(set(now.get("upstream") or {}) | set(last.get("upstream") or {})):
        if (now.get("upstream") or {}).get(parent) != (last.get("upstream") or {}).get(parent):
            reasons.append(f"upstream '{parent}' changed")
    if now.get("source") != last.get("source"):
        reasons.append("function source changed")
    return reasons


def _diff(kind: str, a: Mapping[str, Any], b: Mapping[str, Any]) -> list[str]:
    out = []
    for key in sorted(set(a) | set(b)):
        if key not in b:
            out.append(f"{kind} '{key}' added")
        elif key not in a:
            out.append(f"{kind} '{key}' removed")
        elif a[key] != b[key]:
            out.append(f"{kind} '{key}' changed ({_short(b[key])} -> {_short(a[key])})")
    return out


def _short(v: Any) -> str:
    text = dumps(v)
    return text if len(text) <= 40 else text[:37] + "..."
