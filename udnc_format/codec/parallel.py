"""Worker threads for decoding and encoding the chunks of a tensor in parallel.

Chunks are independent by design (spec §4.3, §5), and the work on them (pread, CRC-32, the
coders, numpy, the Philox generator) releases the GIL on large buffers, so threads use every
core without copying data between processes. Results come back in chunk order and the first
failure in chunk order is the one raised, whatever the thread count, so decoded bits and
reported errors never depend on it.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import CancelledError, Future, ThreadPoolExecutor
from typing import TypeVar

from ..format.errors import InvalidInputError, UDNCError

T = TypeVar("T")
R = TypeVar("R")


def available_cores() -> int:
    """The cores this process may run on.

    >>> available_cores() >= 1
    True
    """
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def thread_count(threads: int | None) -> int:
    """``threads`` checked, or every available core for None or 0.

    >>> thread_count(3), thread_count(None) == available_cores()
    (3, True)
    """
    if threads is None or threads == 0:
        return available_cores()
    if not isinstance(threads, int) or isinstance(threads, bool) or threads < 0:
        raise InvalidInputError(f"threads must be a non-negative integer, got {threads!r}")
    return threads


class Workers:
    """``threads`` worker threads (every core for None or 0), created on first use; one
    thread runs everything in the caller.

    >>> with Workers(2) as workers:
    ...     workers.map(lambda x: x * x, range(4))
    [0, 1, 4, 9]
    """

    def __init__(self, threads: int | None = None) -> None:
        self.threads = thread_count(threads)
        self._pool: ThreadPoolExecutor | None = None
        # One UDNCFile may be read from several threads at once: they share one pool.
        self._lock = threading.Lock()

    def _executor(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="udnc")
            return self._pool

    def map(self, function: Callable[[T], R], items: Iterable[T]) -> list[R]:
        """``[function(item) for item in items]``, on the workers."""
        work = list(items)
        if self.threads <= 1 or len(work) <= 1:
            return [function(item) for item in work]
        pool = self._executor()
        futures: list[Future[R]] = []
        try:
            try:
                for item in work:
                    futures.append(pool.submit(function, item))
            except RuntimeError as exc:  # the pool was shut down by close() in another thread
                raise UDNCError("closed while decoding or encoding") from exc
            try:
                return [future.result() for future in futures]
            except CancelledError as exc:
                raise UDNCError("closed while decoding or encoding") from exc
        finally:
            for future in futures:  # after a failure, stop what has not started
                future.cancel()

    def run(self, tasks: Iterable[Callable[[], object]]) -> None:
        """Call every task on the workers; the first failure in task order is raised."""
        self.map(_call, tasks)

    def close(self) -> None:
        """Stop the threads, after the tasks already running."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> Workers:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _call(task: Callable[[], object]) -> None:
    task()


SERIAL = Workers(1)
