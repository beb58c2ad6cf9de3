"""Per-browser sessions: each holds one image and the model's session (its region cache).

A session is reachable only through its random id, so concurrent users never see each
other's images; the store is a bounded LRU because every region cache holds feature maps.
"""

from __future__ import annotations

import secrets
import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tracenet.serve.limits import InputError


@dataclass
class Session:
    """One image being tapped; `lock` serializes taps so the region cache sees one at a time."""

    id: str
    image: np.ndarray
    model_session: Any
    photo: bytes = b""  # the image as the page shows it (JPEG)
    prepared: dict[str, float] | None = None  # cost of the precomputation on load, if any
    taps: int = 0
    first_macs: int = 0
    last: Any = None  # (tap, click, trace result) of the latest tap, for the full-mode comparison
    closed: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)
    _exit: ExitStack = field(default_factory=ExitStack)

    @property
    def size(self) -> tuple[int, int]:
        return self.image.shape[1], self.image.shape[0]

    @contextmanager
    def using(self) -> Iterator[Session]:
        """Hold the session for one request; a session evicted meanwhile is reported as expired."""
        with self.lock:
            if self.closed:
                raise _expired()
            yield self

    def close(self) -> None:
        self.closed = True
        self._exit.close()


def _expired() -> InputError:
    return InputError(
        "this image's session has expired or never existed; pick or upload the image again", status=404
    )


class SessionStore:
    """Thread-safe LRU of sessions; the least recently used one is closed when full."""

    def __init__(self, max_sessions: int = 4) -> None:
        if max_sessions < 1:
            raise ValueError(f"max_sessions must be at least 1, got {max_sessions}")
        self.max_sessions = max_sessions
        self._sessions: OrderedDict[str, Session] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._sessions)

    def open(self, image: np.ndarray, model_session: AbstractContextManager[Any]) -> Session:
        """Enter the model's session context and keep it until the session is evicted."""
        session = Session(id=secrets.token_urlsafe(16), image=image, model_session=None)
        session.model_session = session._exit.enter_context(model_session)
        with self._lock:
            self._sessions[session.id] = session
            evicted = []
            while len(self._sessions) > self.max_sessions:
                evicted.append(self._sessions.popitem(last=False)[1])
        for old in evicted:
            with old.lock:  # let a tap in progress on it finish first
                old.close()
        return session

    def get(self, session_id: str) -> Session:
        with self._lock:
            session = self._sessions.get(session_id)
            if session is None:
                raise _expired()
            self._sessions.move_to_end(session_id)
            return session

    def close(self) -> None:
        with self._lock:
            sessions, self._sessions = list(self._sessions.values()), OrderedDict()
        for session in sessions:
            session.close()
