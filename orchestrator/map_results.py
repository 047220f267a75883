"""What a node downstream of a map receives: the mapped results in input order, read lazily.

A reduce over 100,000 chunks must not need 100,000 results in one Redis reply or one Python list,
so :class:`MapResults` fetches them a batch of chunks at a time (through a callable the worker
supplies: no Redis here) and validates each element as it is yielded. Chunks that did not succeed
(a map with ``allow_failed``) are skipped by iteration and listed in :attr:`MapResults.failed`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

T = TypeVar("T")
FETCH_CHUNKS = 256  #: chunks read per round trip

#: fetch(start, stop) -> for chunks start..stop-1: (state, result JSON or None, error JSON or None)
Fetch = Callable[[int, int], list[tuple[str, str | None, str | None]]]


def split(value: list[Any], batch_size: int) -> list[str]:
    """The chunks of a map over ``value``: ``batch_size`` elements each, as compact JSON lists."""
    return [json.dumps(value[i : i + batch_size], separators=(",", ":")) for i in range(0, len(value), batch_size)]


@dataclass(frozen=True)
class FailedChunk:
    """A chunk of a map that did not succeed: its index, final state and error (type, message)."""

    index: int
    state: str
    error: dict[str, Any] | None


class MapResults(Generic[T]):
    """The results of a map node, element by element, in input order (``for row in stats: ...``).

    ``len()`` is the number of chunks; :meth:`chunks` yields each chunk's outcome.
    """

    def __init__(self, node: str, chunks: int, fetch: Fetch, validate: Callable[[Any], Any] | None = None) -> None:
        self.node = node
        self._chunks = chunks
        self._fetch = fetch
        self._validate = validate
        self._failed: list[FailedChunk] | None = None

    def __len__(self) -> int:
        return self._chunks

    def __repr__(self) -> str:
        return f"MapResults({self.node!r}, chunks={self._chunks})"

    def chunks(self) -> Iterator[tuple[int, list[Any] | None, FailedChunk | None]]:
        """``(index, elements, None)`` for a chunk that succeeded, ``(index, None, failure)`` otherwise."""
        failed: list[FailedChunk] = []
        for start in range(0, self._chunks, FETCH_CHUNKS):
            stop = min(self._chunks, start + FETCH_CHUNKS)
            for i, (state, out, err) in enumerate(self._fetch(start, stop), start):
                if out is None or state not in ("succeeded", "cached"):
                    f = FailedChunk(i, state, json.loads(err) if err else None)
                    failed.append(f)
                    yield i, None, f
                    continue
                values = json.loads(out)
                if self._validate is not None:
                    values = [self._validate(v) for v in values]
                yield i, values, None
        self._failed = failed

    def __iter__(self) -> Iterator[T]:
        for _, values, _failure in self.chunks():
            if values is not None:
                yield from values

    @property
    def failed(self) -> list[FailedChunk]:
        """The chunks that did not succeed (reads the chunk states once if iteration has not)."""
        if self._failed is None:
            for _ in self.chunks():
                pass
        return list(self._failed or [])
