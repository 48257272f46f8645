"""Process-level bounds: no thread stuck in a remote call can keep the agent alive.

A blocking SDK call (botocore against an endpoint that trickles or never answers) runs in a
worker thread that nothing can interrupt. The cycle abandons such a call at its deadline, but
Python would still wait for the thread twice: ``asyncio.run`` joins the loop's default
executor, and interpreter exit joins every ``concurrent.futures`` worker. So the CLI runs its
loop with :func:`run` (which never joins), and ends with :func:`exit_leaving_stuck_threads`
(which leaves with ``os._exit`` when threads it started are still blocked). After a stop
signal, :func:`arm_watchdog` is the last resort: whatever the loop is doing, the process is
gone ``grace_period`` plus :data:`HARD_EXIT_MARGIN` seconds later.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
import threading
import time
from collections.abc import Collection, Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any

__all__ = ["HARD_EXIT_MARGIN", "arm_watchdog", "exit_leaving_stuck_threads", "run"]

log = logging.getLogger(__name__)

HARD_EXIT_MARGIN = 5.0
"""Seconds past the grace period after which a stop signal ends the process regardless."""
_LEFTOVER_TIMEOUT = 2.0
_THREAD_JOIN_TIMEOUT = 1.0


def run(main: Coroutine[Any, Any, int]) -> int:
    """``asyncio.run`` without its unbounded waits on worker threads."""
    loop = asyncio.new_event_loop()
    executor = ThreadPoolExecutor(thread_name_prefix="mlsvc-io")
    loop.set_default_executor(executor)
    asyncio.set_event_loop(loop)
    try:
        return loop.run_until_complete(main)
    finally:
        try:
            leftovers = [t for t in asyncio.all_tasks(loop) if not t.done()]
            for task in leftovers:
                task.cancel()
            if leftovers:
                loop.run_until_complete(asyncio.wait(leftovers, timeout=_LEFTOVER_TIMEOUT))
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            executor.shutdown(wait=False, cancel_futures=True)
            asyncio.set_event_loop(None)
            loop.close()


def _flush() -> None:
    # Best effort on the way out: a stream that cannot flush must not stop the exit.
    for handler in logging.getLogger().handlers:
        with contextlib.suppress(Exception):
            handler.flush()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()


def exit_leaving_stuck_threads(code: int, before: Collection[threading.Thread]) -> None:
    """Return if every non-daemon thread started since ``before`` ends soon; else ``os._exit(code)``."""
    deadline = time.monotonic() + _THREAD_JOIN_TIMEOUT
    current = threading.current_thread()
    for thread in threading.enumerate():
        if thread is current or thread in before or thread.daemon:
            continue
        thread.join(max(0.0, deadline - time.monotonic()))
    stuck = [t.name for t in threading.enumerate() if t is not current and t not in before and not t.daemon]
    if not stuck:
        return
    log.warning(
        "leaving %d thread(s) still blocked in remote calls (%s); exiting without waiting for them",
        len(stuck),
        ", ".join(sorted(stuck)[:5]),
    )
    _flush()
    os._exit(code)


def arm_watchdog(after: float, code: int, what: str) -> None:
    """End the process with ``code`` in ``after`` seconds, however stuck it is (once armed, final)."""

    def fire() -> None:
        time.sleep(after)
        message = f"mlsvc-discover: {what} did not end within {after:g}s; exiting now\n"
        with contextlib.suppress(OSError):
            os.write(2, message.encode())
        # No flushing here: a stuck thread may hold a stream's lock; log lines are flushed as written.
        os._exit(code)

    threading.Thread(target=fire, name="mlsvc-watchdog", daemon=True).start()
