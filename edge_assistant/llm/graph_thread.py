"""The one thread that runs ggml's work: the model's loading, every llama_decode
and every audio encoder pass, whichever thread drives the turn.

llama-cpp-python's ggml is built with OpenMP, and libgomp keeps a team of worker
threads for each thread that starts a parallel region, for as long as that
thread lives. The daemon loaded the model on its main thread and answers each
question on a worker thread of its own, so two teams were alive: more threads
than a 2-core CPU has. libgomp then cuts its spinning at barriers short (its
"throttled" spin count, for more threads than CPUs), and ggml ends every graph
node at an OpenMP barrier, so every node ended in a futex sleep and wake
(``GOMP_SPINCOUNT`` does not reach the throttled count). On the full-size twin
(2-core AVX-512 Xeon) a 24-token audio encoder step took 159 ms instead of 115
and its prefill 460 ms instead of 430. One long-lived thread keeps one team.
(``OMP_WAIT_POLICY=active`` made it worse: the idle team's worker spins too.)
"""

from __future__ import annotations

import queue
import threading
from typing import Callable, Generic, TypeVar

T = TypeVar("T")


class _Job(Generic[T]):
    def __init__(self, function: Callable[[], T]) -> None:
        self.function = function
        self.result: T | None = None
        self.error: BaseException | None = None
        self.done = threading.Event()


class GraphThread:
    """Runs functions one at a time on its own thread, for callers on any thread."""

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[_Job] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._serve, name="ggml", daemon=True)
        self._thread.start()

    def run(self, function: Callable[[], T]) -> T:
        """``function()``'s result (or its exception), computed on this thread.
        A signal raised in the caller meanwhile (Ctrl-C) is raised once the job has
        ended: a caller that unwinds may free what the graph is using."""
        if threading.current_thread() is self._thread:
            return function()
        job = _Job(function)
        self._jobs.put(job)
        interrupted: BaseException | None = None
        while True:
            try:
                job.done.wait()
                break
            except BaseException as signal:  # noqa: BLE001 - re-raised below, after the job
                interrupted = signal
        if interrupted is not None:
            raise interrupted
        if job.error is not None:
            raise job.error
        return job.result  # type: ignore[return-value]

    def _serve(self) -> None:
        while True:
            job = self._jobs.get()
            try:
                job.result = job.function()
            except BaseException as error:  # noqa: BLE001 - handed to the caller
                job.error = error
            finally:
                job.done.set()


_started = threading.Lock()
_graph_thread: GraphThread | None = None


def on_graph_thread(function: Callable[[], T]) -> T:
    """Run ``function`` (ggml work) on the process's one graph thread."""
    global _graph_thread
    if _graph_thread is None:
        with _started:
            if _graph_thread is None:
                _graph_thread = GraphThread()
    return _graph_thread.run(function)
