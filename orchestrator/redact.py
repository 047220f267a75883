"""The one secret-masking path: logs, Celery events, errors, artifacts and the CLI all go through it.

A :class:`Masker` knows one attempt's secrets: the paths the task's config model declares secret
(``SecretStr``/``SecretBytes``/``Secret`` at any depth: nested models, lists, dicts, Optional),
the field names a task marks secret, and the values found there. It masks

* structured data (params, input samples, log fields): secret paths, secret-looking key names,
  secret-typed values, and every known secret value or URL credential inside strings;
* free text (exception messages, tracebacks): known secret values and URL credentials.

Every scan is linear (``str.find``/``str.replace``, no backtracking regex) and never sees
unbounded text: a string is cut to its output bound plus a small margin *before* it is scanned.
"""

from __future__ import annotations

import json
import re
import types
import typing
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, Secret, SecretBytes, SecretStr

MASK = "***"
#: A name that says "secret" (matched on at most the first 200 characters of a key).
SECRET_KEY_RE = re.compile(r"pass(?:word|wd)?|secret|token|api[_-]?key|credential|private[_-]?key|auth", re.I)
MAX_STRING = 500  #: longest string kept in a redacted structure (input samples, metadata.json)
MAX_ITEMS = 20  #: list items kept in a redacted structure
MAX_KEYS = 200  #: dict keys kept in a redacted structure
MAX_DEPTH = 8
MIN_SECRET = 4  #: shorter values are masked by path/type/name only, never searched for in free text
SCAN_MARGIN = 4096  #: text scanned past a cut, so a credential straddling the cut is still found
MAX_SECRET_MARGIN = 65536  #: at most this much more for long secret values
URL_SCAN_CHARS = 65536  #: a param string's URL passwords are collected from its first 64 kB only
ANY = "*"  #: path segment matching any dict key or list index

_SECRET_TYPES = (SecretStr, SecretBytes, Secret)
_LINE_END = re.compile(r"[\r\n]")  # a character class: linear, no backtracking


# -- free text ----------------------------------------------------------------------------------


def _userinfo_spans(text: str) -> Iterator[tuple[int, int]]:
    """``(begin, at)`` of every URL userinfo in ``text``; linear in ``len(text)``.

    The userinfo of a URL is everything between ``://`` and the last ``@`` before the end of the
    line or the next ``://``: passwords with spaces, ``/`` or ``@`` are found whole.
    """
    start = text.find("://")
    if start == -1 or "@" not in text:
        return
    line_end = -1
    while start != -1:
        begin = start + 3
        nxt = text.find("://", begin)
        if line_end < begin:  # monotone: each character is searched once
            m = _LINE_END.search(text, begin)
            line_end = m.start() if m else len(text)
        end = min(line_end, nxt if nxt != -1 else len(text))
        at = text.rfind("@", begin, end)  # [begin, end) regions never overlap: linear overall
        if at > begin:
            yield begin, at
        start = nxt


def mask_url_credentials(text: str) -> str:
    """``scheme://user:***@host`` for every URL with userinfo; linear in ``len(text)``.

    With a ``:`` in the userinfo the part before it (the user name) is kept; without one
    (``redis://SECRET@host``) all of it is masked. Over-masking (an e-mail address later on the
    same line as a URL) is the price of never missing a password with spaces or ``/`` in it.
    """
    out: list[str] = []
    pos = 0
    for begin, at in _userinfo_spans(text):
        colon = text.find(":", begin, at)
        out += [text[pos:begin], MASK if colon == -1 else text[begin : colon + 1] + MASK]
        pos = at
    if not out:
        return text
    out.append(text[pos:])
    return "".join(out)


def scrub(text: str, secrets: Iterable[str] = (), limit: int | None = None) -> str:
    """``text`` with secret values and URL credentials masked, cut to ``limit`` characters.

    The text is cut to ``limit`` plus a margin before it is scanned, so the cost is bounded by the
    output size, not by the input (a 1 MB exception message costs what a 5 kB one does).
    """
    values = sorted({s for s in secrets if len(s) >= MIN_SECRET}, key=len, reverse=True)
    cut = limit is not None and len(text) > limit
    if cut:
        assert limit is not None
        longest = len(values[0]) if values else 0
        text = text[: limit + SCAN_MARGIN + min(longest, MAX_SECRET_MARGIN)]
    for value in values:
        if value in text:
            text = text.replace(value, MASK)
    text = mask_url_credentials(text)
    if cut or (limit is not None and len(text) > limit):
        assert limit is not None
        text = text[:limit] + "..."
    return text


# -- what is secret -----------------------------------------------------------------------------


def is_secret_key(key: str, names: Iterable[str] = ()) -> bool:
    """A key whose value is masked whatever it holds: marked by the task, or named like a secret."""
    return key in names or SECRET_KEY_RE.search(key[:200]) is not None


def _is_secret_type(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, _SECRET_TYPES)


def secret_paths(model: type[BaseModel] | None) -> frozenset[tuple[str, ...]]:
    """Paths of the secret-typed fields of ``model`` at any depth (``*`` = any key or index)."""
    found: set[tuple[str, ...]] = set()

    def walk(tp: Any, path: tuple[str, ...], seen: frozenset[type]) -> None:
        origin, args = typing.get_origin(tp), typing.get_args(tp)
        if _is_secret_type(tp) or _is_secret_type(origin):
            found.add(path)
        elif origin is typing.Annotated:
            walk(args[0], path, seen)
        elif isinstance(tp, type) and issubclass(tp, BaseModel):
            if tp in seen:  # a recursive model: its paths repeat, the first level is enough
                return
            for name, info in tp.model_fields.items():
                for key in {name, info.alias or name}:
                    walk(info.annotation, (*path, key), seen | {tp})
        elif origin in (typing.Union, types.UnionType):
            for arg in args:
                walk(arg, path, seen)
        elif isinstance(origin, type) and issubclass(origin, Mapping):
            if args:
                walk(args[-1], (*path, ANY), seen)
        elif isinstance(origin, type) and issubclass(origin, Sequence | set | frozenset) and origin is not str:
            for arg in args:
                if arg is not Ellipsis:
                    walk(arg, (*path, ANY), seen)

    if model is not None:
        walk(model, (), frozenset())
    return frozenset(found)


def _text_forms(value: Any) -> set[str]:
    """A secret as it may appear in text: itself, and escaped as repr() and JSON would write it."""
    if isinstance(value, bytes):
        forms = {value.decode("utf-8", "replace"), repr(value)[2:-1]}
    elif isinstance(value, str):
        forms = {value, repr(value)[1:-1], json.dumps(value)[1:-1]}
    else:
        forms = {str(value)}
    return {f for f in forms if len(f) >= MIN_SECRET}


def _url_passwords(text: str) -> set[str]:
    """The secrets of the URL userinfos in ``text``: the password, or the whole userinfo without one."""
    found = set()
    for begin, at in _userinfo_spans(text):
        colon = text.find(":", begin, at)
        found.add(text[begin:at] if colon == -1 else text[colon + 1 : at])
    return found


@dataclass(frozen=True)
class Masker:
    """One attempt's secrets, and the functions that mask them everywhere."""

    values: frozenset[str] = frozenset()  #: secret values, searched for in free text
    paths: frozenset[tuple[str, ...]] = frozenset()  #: secret paths in params (``*`` = any key/index)
    names: frozenset[str] = frozenset()  #: key names masked at any depth (a task's ``secret_fields``)
    _trie: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        for path in self.paths:
            node = self._trie
            for seg in path:
                node = node.setdefault(seg, {})
            node[""] = True

    @classmethod
    def for_model(cls, model: type[BaseModel] | None, names: Iterable[str] = ()) -> Masker:
        """The static part (paths, names) for a task's config model; values come with :meth:`with_params`."""
        return cls(paths=secret_paths(model), names=frozenset(names))

    def with_params(self, params: Any, model: type[BaseModel] | None = None) -> Masker:
        """This masker plus the secret values of ``params`` (raw JSON and, if it validates, ``model``)."""
        found: set[str] = set()
        self._collect(params, (self._trie,), "", found)
        if model is not None and isinstance(params, dict):
            try:
                self._collect(model.model_validate(params), (), "", found)
            except Exception:  # invalid params: the raw walk above already has what paths and names give
                pass
        return Masker(self.values | found, self.paths, self.names)

    def _collect(self, v: Any, nodes: tuple[dict[str, Any], ...], key: str, found: set[str]) -> None:
        if isinstance(v, _SECRET_TYPES):
            found |= _text_forms(v.get_secret_value())
        elif isinstance(v, str | bytes):
            if key and (any("" in n for n in nodes) or is_secret_key(key, self.names)):
                found |= _text_forms(v)
            if isinstance(v, str) and "://" in v:  # a URL's password may be quoted alone in a message
                for pw in _url_passwords(v[:URL_SCAN_CHARS]):
                    found |= _text_forms(pw)
        elif isinstance(v, BaseModel):
            for k in type(v).model_fields:
                self._collect(getattr(v, k), _step(nodes, k), k, found)
        elif isinstance(v, dict):
            for k, item in v.items():
                self._collect(item, _step(nodes, str(k)), str(k), found)
        elif isinstance(v, list | tuple | set | frozenset):
            for item in v:
                self._collect(item, _step(nodes, ANY), key, found)
        elif key and v is not None and (any("" in n for n in nodes) or is_secret_key(key, self.names)):
            found |= _text_forms(v)

    def text(self, value: str, limit: int | None = None) -> str:
        """Free text (an exception message, a traceback line) with secrets masked, cut to ``limit``."""
        return scrub(value, self.values, limit)

    def data(self, value: Any, max_string: int = MAX_STRING) -> Any:
        """A JSON-friendly copy of ``value`` with secrets masked and long strings and lists cut."""
        return self._data(value, (self._trie,), max_string, 0)

    def _data(self, value: Any, nodes: tuple[dict[str, Any], ...], max_string: int, depth: int) -> Any:
        if depth > MAX_DEPTH:
            return "..."
        if isinstance(value, _SECRET_TYPES):
            return MASK
        if isinstance(value, BaseModel):
            value = {k: getattr(value, k) for k in type(value).model_fields}
        if isinstance(value, dict):
            out: dict[str, Any] = {}
            for i, (k, v) in enumerate(value.items()):
                if i == MAX_KEYS:
                    out["..."] = f"{len(value) - MAX_KEYS} more keys"
                    break
                key = str(k)
                child = _step(nodes, key)
                secret = any("" in n for n in child) or is_secret_key(key, self.names)
                out[self.text(key, max_string)] = MASK if secret else self._data(v, child, max_string, depth + 1)
            return out
        if isinstance(value, list | tuple):
            child = _step(nodes, ANY)
            if any("" in n for n in child):
                return [MASK for _ in value[:MAX_ITEMS]]
            return [self._data(v, child, max_string, depth + 1) for v in value[:MAX_ITEMS]]
        if isinstance(value, str):
            return self.text(value, max_string)
        if isinstance(value, bytes):
            return self.text(value[: max_string + SCAN_MARGIN].decode("utf-8", "replace"), max_string)
        if isinstance(value, int | float | bool) or value is None:
            return value
        return self.text(_short_repr(value, max_string), max_string)


def _step(nodes: tuple[dict[str, Any], ...], key: str) -> tuple[dict[str, Any], ...]:
    """The secret-path trie nodes reached from ``nodes`` through ``key``."""
    return tuple(n[k] for n in nodes for k in (key, ANY) if k in n)


def _short_repr(value: Any, max_string: int) -> str:
    import reprlib

    r = reprlib.Repr()
    r.maxstring = r.maxother = r.maxlong = max_string
    return r.repr(value)


NO_SECRETS = Masker()


def redact(value: Any, secret_fields: Iterable[str] = (), secrets: Iterable[str] = ()) -> Any:
    """A JSON-friendly copy of ``value`` with secret-looking keys, secret types and URL credentials masked."""
    return Masker(values=frozenset(secrets), names=frozenset(secret_fields)).data(value)


def secret_values(params: Any, secret_fields: Iterable[str] = ()) -> set[str]:
    """The secret values in ``params`` (by type, by marking or by key name), to scrub from text."""
    return set(Masker(names=frozenset(secret_fields)).with_params(params).values)
