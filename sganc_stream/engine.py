"""Where per-clip work runs: in this process (``local``) or on a pool of Ray actors (``ray``, an optional extra).

Both engines take a loaded face model, a per-worker ``setup(model) -> state`` (run once per worker: what a worker
keeps between clips, e.g. the model and a landmark detector) and a per-item ``work(state, item) -> result``, and
yield ``(index, result)`` as results arrive (the local engine in order; Ray in completion order). The caller
writes every output, so results from a cluster land in the same files, with the same bytes, as local ones.

Ray workers each load the model once: the driver puts the bundle's bytes in Ray's object store (so no node needs
the file), a worker writes them to a temporary file, loads it on ``device`` and checks the model id (the content
hash every stream header carries) against the driver's. A worker also checks that it runs the same sganc-stream
code as the driver (a hash of the package's sources), since coded bytes depend on the code.

Failures, the same for both engines: a :class:`SgancError` raised by ``work`` (an unreadable clip, no face) makes
the item :class:`Failed` at once, since it would fail the same way again; a worker process that dies on an item
(killed, out of memory, crashed, node lost) has the item retried on another worker, and a second death makes it
:class:`Failed`; any other exception is a bug and stops the run. Torch's thread count changes float results and
so coded bytes: Ray workers run ``max(1, floor(cpus_per_worker))`` threads, the local engine the process's own.
"""

from __future__ import annotations

import hashlib
import logging
import math
import socket
import tempfile
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from sganc_stream.errors import CheckpointError, InputError, SgancError, extra_hint, import_extra
if TYPE_CHECKING:  # imported where a worker starts: the command line's --help needs none of torch
    from sganc_stream.pipeline import FaceModel

S = TypeVar("S")
ENGINES = ("local", "ray")
RAY_EXTRA = extra_hint("ray")
ATTEMPTS = 2  # worker deaths an item may cause before it is reported as failed
START_ATTEMPTS = 3  # deaths of a worker slot before it ever became ready, before the run gives up
START_NOTE_S = 120.0  # no worker ready after this long: say what the cluster has free (workers queue for resources)
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EngineOptions:
    """The engine and, for Ray, the cluster and the pool of workers.

    ``address``: None starts a local Ray instance on this machine (or joins ``RAY_ADDRESS`` when set); ``auto`` or
    ``HOST:PORT`` joins a running cluster. ``workers``: None = as many as the cluster's CPUs (and GPUs) hold.
    ``device``: where workers run E and G (``cuda`` needs ``gpus_per_worker > 0``: Ray hides GPUs otherwise).
    Raises InputError for inconsistent values.
    """

    engine: str = "local"
    address: str | None = None
    workers: int | None = None
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise InputError(f"unknown engine {self.engine!r} ({', '.join(ENGINES)})")
        if self.engine == "local":
            given = [name for name, v, default in (("--address", self.address, None), ("--workers", self.workers, None),
                                                   ("--cpus-per-worker", self.cpus_per_worker, 1.0),
                                                   ("--gpus-per-worker", self.gpus_per_worker, 0.0)) if v != default]
            if given:
                raise InputError(f"{', '.join(given)} only apply to --engine ray")
            return
        if self.workers is not None and self.workers < 1:
            raise InputError("--workers must be at least 1")
        if not (math.isfinite(self.cpus_per_worker) and self.cpus_per_worker > 0):
            raise InputError("--cpus-per-worker must be > 0")
        if not (math.isfinite(self.gpus_per_worker) and self.gpus_per_worker >= 0):
            raise InputError("--gpus-per-worker must be >= 0")
        cuda = self.device.startswith("cuda")
        if cuda and self.gpus_per_worker == 0:
            raise InputError(f"--device {self.device} with --engine ray needs --gpus-per-worker > 0")
        if not cuda and self.gpus_per_worker > 0:
            raise InputError("--gpus-per-worker > 0 needs --device cuda")

    @property
    def threads(self) -> int:
        """Torch threads in each Ray worker."""
        return max(1, int(self.cpus_per_worker))

    def driver_device(self) -> str:
        """Where the calling process loads its model: the workers' device locally; CPU with Ray (the driver only
        reads the model's id and settings, and the head node may have no GPU)."""
        return self.device if self.engine == "local" else "cpu"


@dataclass(frozen=True)
class Failed:
    """An item that did not give a result: the error line, and how many tries it had."""

    error: str
    attempts: int = 1


class Pool(Generic[S]):
    """Workers that each hold a state built by ``setup(model)``; ``map`` runs one function over items."""

    def map(self, work: Callable[[S, Any], Any], items: Sequence[Any]) -> Iterator[tuple[int, Any]]:
        """Yield ``(index, work(state, items[index]))`` or ``(index, Failed)`` for every item, as they finish.

        One map at a time; consume it to the end (or leave the pool's ``with`` block, which stops the workers).
        """
        raise NotImplementedError


class LocalPool(Pool[S]):
    """This process, one item after another, in order."""

    def __init__(self, state: S) -> None:
        self.state = state

    def map(self, work: Callable[[S, Any], Any], items: Sequence[Any]) -> Iterator[tuple[int, Any]]:
        for i, item in enumerate(items):
            try:
                yield i, work(self.state, item)
            except SgancError as exc:
                yield i, Failed(str(exc))


@contextmanager
def open_pool(options: EngineOptions, model: FaceModel, setup: Callable[[FaceModel], S]) -> Iterator[Pool[S]]:
    """A pool for ``options``: locally ``setup(model)`` in this process; with Ray, workers that load ``model``'s
    file themselves. Leaving the block (Ctrl-C included) stops the workers, and the Ray instance if it started one.
    Raises InputError when Ray is asked for and not installed, or the cluster cannot hold the workers."""
    if options.engine == "local":
        yield LocalPool(setup(model))
        return
    ray = import_ray()
    started = not ray.is_initialized()
    if started:
        ray.init(address=options.address, include_dashboard=False, log_to_driver=False,
                 logging_level=logging.WARNING)
    pool = None
    try:
        pool = RayPool(ray, options, model, setup)
        yield pool
    finally:
        if pool is not None:
            pool.stop()
        if started:
            ray.shutdown()


def import_ray() -> Any:
    return import_extra("ray", "--engine ray", "ray")


@cache
def code_fingerprint() -> str:
    """SHA-256 over this package's Python sources (relative path and bytes, sorted): equal code, equal bytes."""
    root = Path(__file__).resolve().parent
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        h.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


class RayWorker:
    """One Ray actor's body (wrapped with ``ray.remote`` by :class:`RayPool`, so Ray stays an optional import).

    A failure while starting (other code, other model, no CUDA on the node) is kept and reported by ``ready``
    rather than raised, so the driver can stop with that one line.
    """

    def __init__(self, bundle: bytes, model_id: str, code: str, device: str, threads: int,
                 setup: Callable[[FaceModel], Any]) -> None:
        self.state: Any = None
        self.error: str | None = None
        try:
            if code != code_fingerprint():
                raise InputError("this node runs other sganc-stream code than the driver; install the same version")
            import torch

            from sganc_stream.pipeline import load_face_model

            torch.set_num_threads(threads)
            with tempfile.TemporaryDirectory(prefix="sganc-model-") as tmp:
                path = Path(tmp) / "model.bundle"
                path.write_bytes(bundle)
                model = load_face_model(path, device)
            if model.model_id != model_id:
                raise CheckpointError(f"the model shipped to this worker has id {model.model_id[:12]}…, "
                                      f"the driver's is {model_id[:12]}…")
            self.state = setup(model)
        except SgancError as exc:
            self.error = f"worker on {socket.gethostname()}: {exc}"

    def ready(self) -> str | None:
        return self.error

    def run(self, work: Callable[[Any, Any], Any], item: Any) -> Any:
        try:
            return work(self.state, item)
        except SgancError as exc:
            return Failed(str(exc))


class RayPool(Pool[S]):
    """A pool of :class:`RayWorker` actors; one item in flight per worker; dead workers are replaced."""

    def __init__(self, ray: Any, options: EngineOptions, model: FaceModel, setup: Callable[[FaceModel], S]) -> None:
        self.ray = ray
        resources = ray.cluster_resources()
        cpus, gpus = resources.get("CPU", 0.0), resources.get("GPU", 0.0)
        fits = int(cpus // options.cpus_per_worker)
        if options.gpus_per_worker > 0:
            fits = min(fits, int(gpus // options.gpus_per_worker))
        self.workers = options.workers or fits
        if self.workers < 1 or self.workers > fits:
            raise InputError(f"the Ray cluster has {cpus:g} CPUs and {gpus:g} GPUs: {self.workers or 1} workers of "
                             f"{options.cpus_per_worker:g} CPUs and {options.gpus_per_worker:g} GPUs do not fit")
        actor = ray.remote(RayWorker).options(num_cpus=options.cpus_per_worker, num_gpus=options.gpus_per_worker,
                                              max_restarts=0, max_task_retries=0)
        bundle = ray.put(Path(model.source).read_bytes())
        self._new = lambda: actor.remote(bundle, model.model_id, code_fingerprint(), options.device, options.threads,
                                         setup)
        self._actors: list[Any] = []
        self._starting: dict[Any, tuple[Any, int]] = {}  # ready() ref → (actor, start attempt)
        self._idle: deque[Any] = deque()
        self._waited = False  # True once a worker was ready, or the wait was reported
        for _ in range(self.workers):
            self._start(1)

    def _start(self, attempt: int, last_error: str = "") -> None:
        if attempt > START_ATTEMPTS:
            raise SgancError(f"Ray workers died {START_ATTEMPTS} times while starting; last: {last_error}")
        actor = self._new()
        self._actors.append(actor)
        self._starting[actor.ready.remote()] = (actor, attempt)

    def _drop(self, actor: Any) -> None:
        self.ray.kill(actor, no_restart=True)
        self._actors.remove(actor)

    def _started(self, ref: Any) -> None:
        actor, attempt = self._starting.pop(ref)
        try:
            error = self.ray.get(ref)
        except self.ray.exceptions.RayActorError as exc:
            self._drop(actor)
            self._start(attempt + 1, _last_line(exc))
            return
        if error is not None:
            raise SgancError(error)
        self._waited = True
        self._idle.append(actor)

    def map(self, work: Callable[[S, Any], Any], items: Sequence[Any]) -> Iterator[tuple[int, Any]]:
        ray = self.ray
        queue = deque((i, 1) for i in range(len(items)))  # (item, attempt)
        running: dict[Any, tuple[Any, int, int]] = {}  # run() ref → (actor, item, attempt)

        def dispatch() -> None:
            while queue and self._idle:
                actor = self._idle.popleft()
                i, attempt = queue.popleft()
                running[actor.run.remote(work, items[i])] = (actor, i, attempt)

        while queue or running:
            dispatch()
            ready, _ = ray.wait([*running, *self._starting], num_returns=1,
                                timeout=None if self._waited else START_NOTE_S)
            if not ready:
                self._waited = True
                free, total = ray.available_resources(), ray.cluster_resources()
                log.warning("no Ray worker has started after %.0f s: the cluster has %g of %g CPUs and %g of %g GPUs "
                            "free; workers wait for them", START_NOTE_S, free.get("CPU", 0), total.get("CPU", 0),
                            free.get("GPU", 0), total.get("GPU", 0))
                continue
            ref = ready[0]
            if ref in self._starting:
                self._started(ref)
                continue
            actor, i, attempt = running.pop(ref)
            try:
                result = ray.get(ref)
            except ray.exceptions.RayActorError as exc:  # the worker process is gone: replace it, retry the item
                self._drop(actor)
                self._start(1)
                if attempt < ATTEMPTS:
                    queue.appendleft((i, attempt + 1))
                else:
                    yield i, Failed(f"its worker died {attempt} times ({_first_line(exc)})", attempt)
                continue
            except ray.exceptions.RayTaskError as exc:
                raise exc.as_instanceof_cause() from None
            self._idle.append(actor)
            dispatch()  # the worker takes its next item while the caller handles this result
            if isinstance(result, Failed) and attempt > 1:
                result = Failed(result.error, attempt)
            yield i, result

    def stop(self) -> None:
        """Kill every worker (tasks in flight are dropped: their outputs were never written)."""
        for actor in self._actors:
            self.ray.kill(actor, no_restart=True)
        self._actors.clear()
        self._starting.clear()
        self._idle.clear()


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0][:200] if lines else type(exc).__name__


def _last_line(exc: BaseException) -> str:
    """The innermost error of a Ray traceback (a creation failure's own exception line)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[-1][:200] if lines else type(exc).__name__
