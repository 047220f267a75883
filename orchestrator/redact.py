"""One redaction function for logs, error reports, Celery argument reprs and the API.

Masks pydantic ``SecretStr``/``SecretBytes``, fields a task marks secret,
secret-looking key names, and credentials inside URLs.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel, SecretBytes, SecretStr

MASK = "***"
SECRET_KEY_RE = re.compile(r"(pass(word|wd)?|secret|token|api[_-]?key|credential|private[_-]?key|auth)", re.I)
URL_CRED_RE = re.compile(r"(?P<scheme>[a-z][a-z0-9+.\-]*://)(?P<user>[^:/@\s]*):(?P<pw>[^@/\s]+)@", re.I)
MAX_STRING = 500


def secret_values(params: Any, secret_fields: Iterable[str] = ()) -> set[str]:
    """The values in ``params`` that are secret (by type, by marking or by key name), to scrub from text."""
    secret = set(secret_fields)
    found: set[str] = set()

    def walk(v: Any, key: str = "") -> None:
        if isinstance(v, SecretStr):
            found.add(v.get_secret_value())
        elif isinstance(v, BaseModel):
            for k in type(v).model_fields:
                walk(getattr(v, k), k)
        elif isinstance(v, dict):
            for k, item in v.items():
                walk(item, str(k))
        elif isinstance(v, list | tuple):
            for item in v:
                walk(item, key)
        elif isinstance(v, str) and key and (key in secret or SECRET_KEY_RE.search(key)):
            found.add(v)
            m = URL_CRED_RE.search(v)
            if m:
                found.add(m["pw"])

    walk(params)
    return {s for s in found if len(s) >= 4}


def scrub(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every secret value and URL password masked (for exception messages, tracebacks)."""
    for value in sorted(secrets, key=len, reverse=True):
        text = text.replace(value, MASK)
    return URL_CRED_RE.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@", text)


def redact(value: Any, secret_fields: Iterable[str] = (), _depth: int = 0) -> Any:
    """A JSON-friendly copy of ``value`` with secrets masked and long strings cut."""
    secret = set(secret_fields)
    if _depth > 8:
        return "..."
    if isinstance(value, SecretStr | SecretBytes):
        return MASK
    if isinstance(value, BaseModel):
        value = {k: getattr(value, k) for k in type(value).model_fields}
    if isinstance(value, dict):
        return {
            str(k): MASK if (k in secret or SECRET_KEY_RE.search(str(k))) else redact(v, secret, _depth + 1)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [redact(v, secret, _depth + 1) for v in value[:20]]
    if isinstance(value, str):
        text = URL_CRED_RE.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@", value)
        return text if len(text) <= MAX_STRING else text[:MAX_STRING] + "..."
    if isinstance(value, int | float | bool) or value is None:
        return value
    return redact(repr(value), secret, _depth + 1)
