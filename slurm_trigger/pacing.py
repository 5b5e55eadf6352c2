"""How fast one container sends calls to one slurmrestd: overlapped, bounded, and slowed
down when slurmctld struggles, never a retry storm.

The submits of an SQS batch run side by side, at most ``limit`` at a time
(``SLURM_MAX_CONNECTIONS``: the transport's pool holds that many connections, so more
threads would only queue for one; the head node kit caps slurmrestd's side). Within
that bound the window of calls in flight adapts, as TCP's congestion window does
(additive increase, multiplicative decrease): it grows by one per window of answers
that came back in time, and halves on an answer slower than ``slow_seconds`` or a
``SlurmBusyError`` (EAGAIN, job queue full, 429). After a busy answer nothing is sent
for a pause that doubles (with jitter, up to ``max_pause``) while the busy answers
go on, and resets after the first answer in time. A busy submit made no job, so the
trigger sends it again after the pause, a few times within its deadline; then it is
a transient failure and the object comes back from its queue: never dropped.

Written by hand: urllib3's ``Retry`` backs off one request, never a whole pool, and
never repeats a POST; no well-kept library adapts the concurrency of a blocking
``requests`` session.
"""
from __future__ import annotations

import random
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, TypeVar

from slurm_trigger.slurm.errors import SlurmBusyError

T = TypeVar("T")
SLOW_SECONDS = 1.0  # a submit normally takes milliseconds; sdiag flags RPCs over a second
BUSY_TRIES = 4  # sends of a job that slurmctld keeps answering "busy" (sbatch: 15, seconds apart)


class Pacer:
    """Calls to one slurmrestd from one container, overlapped within an adaptive window."""

    def __init__(
        self,
        limit: int = 4,
        *,
        slow_seconds: float = SLOW_SECONDS,
        pause: float = 0.25,
        max_pause: float = 8.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit = max(1, int(limit))
        self.window = float(self.limit)
        self.slow_seconds = slow_seconds
        self._first_pause = pause
        self._max_pause = max_pause
        self._pause = 0.0
        self._resume_at = 0.0
        self._in_flight = 0
        self._monotonic = monotonic
        self._cond = threading.Condition()
        self._held = threading.local()
        self._executor: ThreadPoolExecutor | None = None
        self.busy_answers = 0  # for benchmarks and tests
        self.slow_answers = 0

    def run(self, task: Callable[[], T]) -> Future[T]:
        """``task`` on one of ``limit`` threads kept for the container's life."""
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=self.limit, thread_name_prefix="slurm-submit")
        return self._executor.submit(task)

    def call(self, send: Callable[[], T]) -> T:
        """``send()`` once there is room in the window and no pause runs; its answer
        time (or its busy error) moves the window. A thread already inside ``call``
        (a nested call) does not wait for room again."""
        if getattr(self._held, "depth", 0):
            return send()
        self._acquire()
        self._held.depth = 1
        started = self._monotonic()
        busy = False
        try:
            return send()
        except SlurmBusyError:
            busy = True
            raise
        finally:
            self._held.depth = 0
            self._release(self._monotonic() - started, busy)

    def _acquire(self) -> None:
        with self._cond:
            while True:
                wait = self._resume_at - self._monotonic()
                if wait > 0:
                    self._cond.wait(wait)
                elif self._in_flight < int(self.window):
                    self._in_flight += 1
                    return
                else:
                    self._cond.wait()

    def _release(self, seconds: float, busy: bool) -> None:
        with self._cond:
            self._in_flight -= 1
            if busy:
                self.busy_answers += 1
                self._pause = min(self._max_pause, self._pause * 2 or self._first_pause)
                resume = self._monotonic() + self._pause * (0.5 + random.random() / 2)
                self._resume_at = max(self._resume_at, resume)
                self.window = max(1.0, self.window / 2)
            elif seconds > self.slow_seconds:
                self.slow_answers += 1
                self.window = max(1.0, self.window / 2)
            else:
                self._pause = 0.0
                self.window = min(float(self.limit), self.window + 1 / self.window)
            self._cond.notify_all()
