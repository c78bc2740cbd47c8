"""Operating-system hints for the hot loop: CPU pinning, real-time priority, timer slack (Linux).

Each hint is an attempt: what the OS refused is reported, never raised, so the loop runs the
same on a laptop without privileges. The hints apply to the calling (hot) thread and to the
process's native helper threads — liblsl's inlet threads and ZeroMQ's I/O thread, which sit on
the path of every sample — but not to the process's other Python threads (the forecaster's
supervisor: its child process must neither inherit a real-time policy nor the pinning).
"""

from __future__ import annotations

import ctypes
import os
import threading

_PR_SET_TIMERSLACK = 29


def hot_path_threads() -> list[int]:
    """Thread ids of this process that carry samples: this thread and every non-Python thread."""
    me = threading.get_native_id()
    others = {t.native_id for t in threading.enumerate()} - {me}
    try:
        tids = [int(t) for t in os.listdir("/proc/self/task")]
    except OSError:
        return [me]
    return [t for t in tids if t not in others]


def apply_hints(cpus: set[int] | None = None, fifo_priority: int | None = None, nice: int | None = None,
                timer_slack_ns: int | None = None) -> dict[str, str]:
    """Try each requested hint on :func:`hot_path_threads`; returns ``{hint: "ok" | why it failed}``.

    ``cpus``: pin to these CPU numbers; ``fifo_priority``: ``SCHED_FIFO`` at this priority
    (1–99); ``nice``: niceness (negative needs privileges; ignored by the kernel under FIFO);
    ``timer_slack_ns``: timer slack of the calling thread (the default 50 µs lets timed waits
    wake up to 50 µs late).
    """
    tids = hot_path_threads()
    out: dict[str, str] = {}

    def each(name: str, fn) -> None:
        errors = []
        for tid in tids:
            try:
                fn(tid)
            except (OSError, ValueError) as exc:
                errors.append(f"thread {tid}: {exc}")
        out[name] = "ok" if not errors else "; ".join(errors[:2]) + (" …" if len(errors) > 2 else "")

    if cpus:
        each(f"affinity {sorted(cpus)}", lambda tid: os.sched_setaffinity(tid, cpus))
    if fifo_priority is not None:
        each(f"SCHED_FIFO {fifo_priority}",
             lambda tid: os.sched_setscheduler(tid, os.SCHED_FIFO, os.sched_param(fifo_priority)))
    if nice is not None:
        each(f"nice {nice}", lambda tid: os.setpriority(os.PRIO_PROCESS, tid, nice))
    if timer_slack_ns is not None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            ok = libc.prctl(_PR_SET_TIMERSLACK, ctypes.c_ulong(max(timer_slack_ns, 1)), 0, 0, 0) == 0
            out[f"timer slack {timer_slack_ns} ns"] = "ok" if ok else os.strerror(ctypes.get_errno())
        except (OSError, AttributeError) as exc:
            out[f"timer slack {timer_slack_ns} ns"] = str(exc)
    return out
