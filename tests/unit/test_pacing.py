"""The submit pacer: never more calls in flight than its limit, a window that halves on a
busy or slow answer and grows back on answers in time (counts, not times)."""
from __future__ import annotations

import threading
import time

import pytest

from slurm_trigger.pacing import Pacer
from slurm_trigger.slurm.errors import SlurmBusyError


def test_never_more_in_flight_than_the_limit():
    pacer = Pacer(3)
    lock, now, most = threading.Lock(), [0], [0]

    def call() -> int:
        with lock:
            now[0] += 1
            most[0] = max(most[0], now[0])
        time.sleep(0.02)
        with lock:
            now[0] -= 1
        return 1

    futures = [pacer.run(lambda: pacer.call(call)) for _ in range(20)]
    assert sum(f.result() for f in futures) == 20
    assert most[0] == 3


def test_busy_halves_the_window_and_pauses_then_answers_in_time_grow_it_back():
    pacer = Pacer(4, pause=0.01)

    def busy() -> None:
        raise SlurmBusyError("Resource temporarily unavailable", status=500)

    with pytest.raises(SlurmBusyError):
        pacer.call(busy)
    assert (pacer.window, pacer.busy_answers) == (2.0, 1)
    with pytest.raises(SlurmBusyError):
        pacer.call(busy)
    assert pacer.window == 1.0  # never below one
    for _ in range(10):
        pacer.call(lambda: None)
    assert pacer.window == 4.0


def test_a_slow_answer_halves_the_window():
    ticks = iter([0.0, 0.0, 5.0])  # room checked and sent at 0, answered at 5: slow
    pacer = Pacer(4, slow_seconds=1.0, monotonic=lambda: next(ticks, 5.0))
    pacer.call(lambda: None)
    assert (pacer.window, pacer.slow_answers) == (2.0, 1)


def test_a_nested_call_does_not_wait_for_room():
    pacer = Pacer(1)
    assert pacer.call(lambda: pacer.call(lambda: 7)) == 7
