"""A job: one request's progress, preview and cancel flags; and the queue whose one worker owns the
device. UI tabs, the API and extensions all submit here, so requests never overlap on the model."""
from __future__ import annotations

import itertools
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable


@dataclass
class Progress:
    step: int = 0
    total: int = 0
    image_index: int = 0  # which batch (n_iter) is running
    image_count: int = 1
    started: float = 0.0
    eta: float | None = None  # seconds
    preview: Any = None  # PIL image, when previews are on

    @property
    def fraction(self) -> float:
        if not self.total:
            return 0.0
        return min(1.0, (self.image_index + self.step / self.total) / max(1, self.image_count))


@dataclass
class Job:
    """Shared between the worker (writes progress) and whoever waits (reads it, may cancel)."""

    request: Any
    id: int = 0
    progress: Progress = field(default_factory=Progress)
    interrupted: bool = False
    skipped: bool = False
    preview_every: int = 0  # steps; 0 = no previews
    preview_full: bool = False  # full VAE decode instead of the cheap linear approximation
    on_step: Callable[["Job"], None] | None = None
    result: Any = None
    error: BaseException | None = None
    done: threading.Event = field(default_factory=threading.Event)

    def interrupt(self) -> None:
        self.interrupted = True

    def skip(self) -> None:
        self.skipped = True

    def report(self, step: int, total: int) -> None:
        p = self.progress
        now = time.perf_counter()
        if step == 0 or not p.started:
            p.started = now
        p.step, p.total = step, total
        done = p.fraction
        p.eta = (now - p.started) / done * (1 - done) if done > 0 else None
        if self.on_step is not None:
            self.on_step(self)

    def wait(self, timeout: float | None = None):
        """The result; raises the job's error (a validation or model error) if it failed."""
        if not self.done.wait(timeout):
            raise TimeoutError("generation still running")
        if self.error is not None:
            raise self.error
        return self.result


class GenerationQueue:
    """One worker thread runs jobs in order; ``position`` tells a waiting job its place."""

    def __init__(self, run: Callable[[Job], Any]):
        self._run = run
        self._queue: queue.Queue[Job | None] = queue.Queue()
        self._waiting: list[Job] = []
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self.current: Job | None = None
        self._worker = threading.Thread(target=self._loop, name="generation-worker", daemon=True)
        self._worker.start()

    def submit(self, request: Any, **job_options: Any) -> Job:
        job = Job(request, id=next(self._ids), **job_options)
        with self._lock:
            self._waiting.append(job)
        self._queue.put(job)
        return job

    def position(self, job: Job) -> int:
        """0 = running (or done), 1 = next, ..."""
        with self._lock:
            return self._waiting.index(job) + 1 if job in self._waiting else 0

    def _loop(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            with self._lock:
                self._waiting.remove(job)
            self.current = job
            try:
                if not job.interrupted:
                    job.result = self._run(job)
            except BaseException as e:  # reported to the waiter; the worker keeps serving
                job.error = e
            finally:
                self.current = None
                job.done.set()

    def close(self) -> None:
        self._queue.put(None)
