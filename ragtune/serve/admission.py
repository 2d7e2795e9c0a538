"""A bounded number of requests in a stage at once: the next one is refused at once, never queued unboundedly."""

from __future__ import annotations

import threading
from collections.abc import Callable


class Admission:
    """At most `limit` holders; `take()` returns an idempotent release, or raises `refuse(held)` when full."""

    def __init__(self, limit: int, refuse: Callable[[int], Exception]) -> None:
        self.limit, self._refuse = limit, refuse
        self._held = 0
        self._lock = threading.Lock()

    @property
    def held(self) -> int:
        return self._held

    def take(self) -> Callable[[], None]:
        with self._lock:
            if self._held >= self.limit:
                raise self._refuse(self._held)
            self._held += 1
        released = threading.Event()

        def release() -> None:
            # Idempotent: a request's cleanup may run from both its stream and its error path.
            with self._lock:
                if not released.is_set():
                    released.set()
                    self._held -= 1

        return release
