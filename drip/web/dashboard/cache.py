"""A per-process cache of figures that cost a grouped count (``DRIP_ADMIN_STATS_CACHE_SECONDS``).

The overview's counts and the course statistics read whole tables or large indexes; a marketer
reloading the page should not re-run them every time. Entries expire on the injected clock, so
tests decide when a figure is stale. Each web process keeps its own copy: a figure may be up to
the cache time old, which every page using it says.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

from fastapi import Request

from drip.clock import Clock
from drip.web.deps import runtime

T = TypeVar("T")


@dataclass(frozen=True)
class Cached:
    value: Any
    computed_at: datetime


class FigureCache:
    def __init__(self, clock: Clock, seconds: int) -> None:
        self.clock = clock
        self.ttl = timedelta(seconds=seconds)
        self._entries: dict[str, Cached] = {}
        self._lock = threading.Lock()

    def get(self, key: str, compute: Callable[[], T]) -> tuple[T, datetime]:
        """The cached value of ``key`` and when it was computed, computing it if stale."""
        now = self.clock()
        with self._lock:
            entry = self._entries.get(key)
        if entry is None or now >= entry.computed_at + self.ttl:
            entry = Cached(compute(), now)
            with self._lock:
                self._entries[key] = entry
        value: T = entry.value
        return value, entry.computed_at

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


def figure_cache(request: Request) -> FigureCache:
    """The app's cache, made on first use (the app is built elsewhere)."""
    state = request.app.state
    cache: FigureCache | None = getattr(state, "dashboard_cache", None)
    if cache is None:
        rt = runtime(request)
        cache = FigureCache(rt.clock, rt.settings.admin_stats_cache_seconds)
        state.dashboard_cache = cache
    return cache
