"""One background thread for the desktop app: jobs run off the UI thread, the newest request of each kind wins.

    worker = Worker()
    worker.submit("grid", lambda: model.sample(16, seed=0))   # from the UI thread; returns at once
    for result in worker.drain(): ...                         # Result(kind, token, value, error)

Submitting a kind that is still waiting replaces it, so dragging a slider queues at most one decode, always
the latest (a job already running finishes, and its picture is shown as an intermediate frame). Between
jobs the thread sleeps on a Condition (no timeout), so an idle app uses no CPU; the UI polls `drain`
with Tk's after() only while `idle()` is False.
"""
from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any, NamedTuple


class Result(NamedTuple):
    kind: str  # what was asked for: "load", "grid", "latent", "strip", "save"
    token: int  # increasing per submit; the UI can tell which request a result answers
    value: Any  # what the job returned (None on error)
    error: BaseException | None  # what it raised, if anything


class Worker:
    """A single daemon thread running submitted callables, latest-wins per kind."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._pending: dict[str, tuple[int, Callable[[], Any]]] = {}  # kind -> (token, job), in submit order
        self._results: queue.SimpleQueue[Result] = queue.SimpleQueue()
        self._token = 0
        self._busy = False
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="edgevae-worker", daemon=True)
        self._thread.start()

    def submit(self, kind: str, job: Callable[[], Any]) -> int:
        """Queue `job` under `kind`, replacing a waiting job of that kind; returns its token."""
        with self._cond:
            self._token += 1
            self._pending.pop(kind, None)  # re-insert at the end: jobs run in the order last asked for
            self._pending[kind] = (self._token, job)
            self._cond.notify()
            return self._token

    def idle(self) -> bool:
        """True when nothing is waiting, running, or undelivered."""
        with self._cond:
            return not self._pending and not self._busy and self._results.empty()

    def drain(self) -> list[Result]:
        """Every result finished since the last call, oldest first (never blocks)."""
        out = []
        while True:
            try:
                out.append(self._results.get_nowait())
            except queue.Empty:
                return out

    def close(self, timeout: float = 5.0) -> None:
        """Drop waiting jobs and stop the thread after the running one (if any) returns."""
        with self._cond:
            self._closed = True
            self._pending.clear()
            self._cond.notify()
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._closed:
                    self._cond.wait()  # no timeout: sleeps until submit or close
                if self._closed:
                    return
                kind = next(iter(self._pending))
                token, job = self._pending.pop(kind)
                self._busy = True
            try:
                result = Result(kind, token, job(), None)
            except Exception as e:  # shown in the status bar; the thread keeps serving
                result = Result(kind, token, None, e)
            self._results.put(result)  # before clearing _busy, so idle() never misses a result
            with self._cond:
                self._busy = False
