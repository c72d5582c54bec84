"""Hot recommendation lists, cached per user and dropped when they can change.

A user's entries go when that user has an event or is erased; everything goes when the
catalogue changes (a new, updated or retired item). The cache holds at most ``max_users``
users, least recently used first out.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable
from typing import Any


class RecommendationCache:
    """``user -> {request key -> result}``, LRU over users."""

    def __init__(self, max_users: int = 50_000) -> None:
        self.max_users = max_users
        self._users: OrderedDict[str, dict[Hashable, Any]] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, user_id: str, key: Hashable) -> Any | None:
        with self._lock:
            entries = self._users.get(user_id)
            if entries is not None and key in entries:
                self._users.move_to_end(user_id)
                self.hits += 1
                return entries[key]
            self.misses += 1
            return None

    def put(self, user_id: str, key: Hashable, value: Any) -> None:
        if self.max_users <= 0:
            return
        with self._lock:
            entries = self._users.get(user_id)
            if entries is None:
                entries = self._users[user_id] = {}
                while len(self._users) > self.max_users:
                    self._users.popitem(last=False)
            else:
                self._users.move_to_end(user_id)
            if len(entries) >= 32:
                entries.clear()
            entries[key] = value

    def drop_user(self, user_id: str) -> None:
        with self._lock:
            self._users.pop(user_id, None)

    def clear(self) -> None:
        with self._lock:
            self._users.clear()

    def __len__(self) -> int:
        return len(self._users)
