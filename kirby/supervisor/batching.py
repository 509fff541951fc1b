"""Calls that arrive together share one store round trip.

``Combined(many)`` turns ``many(items) -> results`` (one round trip for a list) into a thread-safe
``combined(item) -> result``: a caller that finds no round trip in flight makes one for every item
waiting (its own included); callers arriving meanwhile wait and go together in the next one. No
caller waits for a timer: alone, a call is one round trip of one item. The runner marks the runs of
one instant *started* this way (each thread right before its spawn, one round trip for all).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")
_PENDING = object()


class _Entry:
    __slots__ = ("item", "result", "error")

    def __init__(self, item):
        self.item, self.result, self.error = item, _PENDING, None


class Combined(Generic[T, R]):
    def __init__(self, many: Callable[[list[T]], list[R]]):
        self._many = many
        self._changed = threading.Condition()
        self._waiting: list[_Entry] = []
        self._busy = False

    def __call__(self, item: T) -> R:
        """``many([... item ...])``'s result for ``item``; its exception is raised to every caller of the batch."""
        entry = _Entry(item)
        with self._changed:
            self._waiting.append(entry)
            while self._busy and entry.result is _PENDING:
                self._changed.wait()
            if entry.result is _PENDING:  # nobody is in flight: this caller takes every waiting item
                self._busy = True
                batch, self._waiting = self._waiting, []
        if entry.result is _PENDING:
            try:
                results, error = self._many([e.item for e in batch]), None
            except BaseException as exc:  # noqa: BLE001 - handed to every caller of the batch
                results, error = [None] * len(batch), exc
            with self._changed:
                for e, result in zip(batch, results):
                    e.result, e.error = result, error
                self._busy = False
                self._changed.notify_all()
        if entry.error is not None:
            raise entry.error
        return entry.result
