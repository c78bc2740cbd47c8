"""OS hints for the hot loop (rt.realtime): applied where permitted, reported (never raised) where not."""

from __future__ import annotations

import os
import threading

from rt.realtime import apply_hints, hot_path_threads


def test_hot_path_threads_are_this_thread_and_native_ones_not_other_python_threads():
    release = threading.Event()
    other = threading.Thread(target=release.wait, daemon=True)
    other.start()
    try:
        tids = hot_path_threads()
        assert threading.get_native_id() in tids
        assert other.native_id not in tids
        assert set(tids) <= {int(t) for t in os.listdir("/proc/self/task")}
    finally:
        release.set()
        other.join()


def test_affinity_is_applied_to_the_hot_path_and_restorable():
    before = os.sched_getaffinity(0)
    one = {min(before)}
    try:
        answer = apply_hints(cpus=one)
        assert answer == {f"affinity {sorted(one)}": "ok"}
        assert os.sched_getaffinity(0) == one
    finally:
        apply_hints(cpus=before)
    assert os.sched_getaffinity(0) == before


def test_a_refused_hint_is_reported_not_raised():
    answer = apply_hints(fifo_priority=1000, timer_slack_ns=1000)  # priority out of range 1..99
    assert list(answer) == ["SCHED_FIFO 1000", "timer slack 1000 ns"]
    assert answer["SCHED_FIFO 1000"] != "ok" and "thread" in answer["SCHED_FIFO 1000"]
    assert os.sched_getscheduler(0) == os.SCHED_OTHER
