"""The Ray engine: a build's encode pass spread over the actors of a Ray cluster.

The driver (the building process) reads the source and fits the models as
the local engine does (training stays in one process, with TensorFlow),
then writes the fitted models into the index's staging folder. A Ray Data
pipeline over chunks of the items then runs on a pool of actors, one per
worker: each loads the saved encoders once, with the NumPy forward pass
(:mod:`retrieval.encoders.autoencoder.numpy_graph`: no TensorFlow in the
workers), and returns per chunk every method's codes and the items' novelty
scores. The driver puts them back in item order and fills the FAISS indexes
as the local engine does (an IVF quantizer is trained there, on the codes),
so the index is the same one: the same codes up to the float rounding of
the two forward passes, the same hits.

The models and the inputs travel through Ray's object store, not the file
system: a cluster's nodes need not see the driver's disk. With an address,
the driver's own ``retrieval`` package is shipped to the workers too
(``runtime_env`` ``py_modules``), so they run the code that wrote the models.

Ray is imported by this module only (``pip install -e '.[ray]'``).
"""
from __future__ import annotations

import logging
import os
import socket
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from .. import novelty
from ..config import RAY_CHUNK_ITEMS
from ..errors import EngineError, InputError
from ..progress import Progress, report
from . import Encoded

#: What to install when Ray is missing (the optional extra of pyproject.toml).
INSTALL = "pip install -e '.[ray]'"
#: Seconds to wait for a cluster's port to answer before giving up.
REACH_SECONDS = 5


def _import_ray():
    try:
        import ray
        import ray.data  # noqa: F401  (the extra is ray[data]: pyarrow comes with it)
    except ImportError as exc:
        raise EngineError(f"--engine ray needs Ray, which is not installed ({exc.name or exc}); "
                          f"install it with {INSTALL}") from None
    return ray


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


class RayEngine:
    """Encodes a build's items on a pool of Ray actors (use as a context manager).

    Args:
        address: The cluster to join, passed to ``ray.init(address=...)``
            (``ray://HOST:PORT`` for Ray Client, ``HOST:PORT`` for the head
            node); ``None`` starts a local Ray on this machine with
            ``workers`` CPUs.
        workers: Encoding actors, one CPU each (default: the cluster's CPUs,
            or this machine's for a local Ray).
        chunk: Items per actor call.

    A Ray already initialised in this process (a notebook, a test) is used as
    it is and left running.
    """

    #: The ``--engine`` value (recorded in the manifest's ``engine`` entry).
    name = "ray"

    def __init__(self, address: str | None = None, workers: int | None = None, *,
                 chunk: int = RAY_CHUNK_ITEMS) -> None:
        if workers is not None and (isinstance(workers, bool) or int(workers) < 1):
            raise InputError(f"--workers must be a positive number of encoding actors; got {workers}")
        if chunk < 1:
            raise InputError(f"chunk must be a positive number of items; got {chunk}")
        self.address, self.workers, self.chunk = address, workers, chunk
        self._started = False

    # -- the cluster ----------------------------------------------------------------
    def __enter__(self) -> "RayEngine":
        ray = _import_ray()
        if not ray.is_initialized():
            self._init(ray)
        cpus = int(ray.cluster_resources().get("CPU", 0))
        if self.workers is None:
            self.workers = max(1, cpus)
        elif self.workers > cpus:  # the actors would wait for CPUs that never come
            self.__exit__()
            raise EngineError(f"--workers {self.workers} needs as many CPUs, and the Ray cluster has {cpus}; "
                              f"give --workers {max(1, cpus)} or fewer, or add nodes")
        # Ray Data logs every pipeline's progress (and that its bars are off); the CLI shows its own bar.
        logging.getLogger("ray.data").setLevel(logging.ERROR)
        ray.data.DataContext.get_current().enable_progress_bars = False
        return self

    def _init(self, ray) -> None:
        # Errors reach the driver as exceptions; Ray's start-up notes and the
        # workers' logs would sit between the user and the result.
        quiet = {"include_dashboard": False, "logging_level": logging.ERROR, "log_to_driver": False}
        if self.address:
            _check_reachable(self.address)
        try:
            if self.address:
                import retrieval

                ray.init(address=self.address, runtime_env={"py_modules": [str(Path(retrieval.__file__).parent)]},
                         **quiet)
            else:
                # address="local": a new Ray of our own, never one that RAY_ADDRESS points at.
                ray.init(address="local", num_cpus=self.workers or os.cpu_count() or 1, **quiet)
        except Exception as exc:  # Ray raises ConnectionError, RuntimeError, ValueError, TimeoutError...
            where = f"the Ray cluster at {self.address}" if self.address else "a local Ray"
            fix = ("check the address (ray://HOST:10001 for Ray Client, HOST:6379 for the head node) and that "
                   "the cluster is up" if self.address else "check 'ray status' and free memory")
            raise EngineError(f"cannot start or reach {where} ({_first_line(exc)}); {fix}") from None
        self._started = True

    def __exit__(self, *exc) -> None:
        if self._started:
            import ray

            ray.shutdown()
            self._started = False

    # -- the encode pass ----------------------------------------------------------
    def encode(self, models: dict[str, tuple[str, Path]], batch, progress: Progress | None = None) -> Encoded:
        """Every method's codes and the novelty scores of ``batch``, in item order.

        Args:
            models: ``{method: (encoder registry name, saved folder)}``; must
                hold the autoencoder that scores novelty
                (:data:`retrieval.novelty.METHOD`).
            batch: The items (:class:`retrieval.modality.Batch`): its inputs and OOV fractions.
            progress: Progress callback (``encode on ray``: items done).

        Raises:
            EngineError: The pipeline failed on the cluster (the message names the cause).
        """
        return next(self.encode_all(models, [batch], progress))

    def encode_all(self, models: dict[str, tuple[str, Path]], batches: Iterable,
                   progress: Progress | None = None) -> Iterator[Encoded]:
        """:meth:`encode` for a sequence of batches (a build's chunks) through one pool of actors.

        The batches' inputs go to the object store first (Ray spills it to
        disk beyond its memory); the actors start and load the models once.

        Yields:
            One :class:`Encoded` a batch, in the order of ``batches``, each as soon as it is complete.
        """
        ray = _import_ray()
        if not ray.is_initialized():  # ray.put would start a Ray of its own, never stopped
            raise EngineError("the Ray engine is not started; use it as a context manager "
                              "(with RayEngine(...) as engine: ...)")
        if novelty.METHOD not in models:
            raise ValueError(f"the engine needs the {novelty.METHOD!r} model to score novelty")
        started = time.perf_counter()
        parts, sizes = [], []
        for batch in batches:
            parts.append((ray.put(batch.inputs), ray.put(batch.oov)))
            sizes.append(batch.inputs.shape[0])
        total = sum(sizes)
        chunk = max(1, min(self.chunk, -(-total // self.workers)))  # a small build still reaches every worker
        rows = [{"batch": b, "start": s} for b, n in enumerate(sizes) for s in range(0, n, chunk)]
        shared = {"models": ray.put({m: (name, _files(folder)) for m, (name, folder) in models.items()}),
                  "batches": parts}
        # One block per chunk: the actors take chunks as they free up, and each
        # result says which items it holds (the order they come back in does not matter).
        pipeline = ray.data.from_items(rows, override_num_blocks=len(rows)).map_batches(
            _Worker, batch_size=1, compute=ray.data.ActorPoolStrategy(size=self.workers), num_cpus=1,
            fn_constructor_kwargs={"shared": shared, "chunk": chunk}) if rows else None
        results = [_Filling(n) for n in sizes]
        cpu: dict[int, float] = {}  # CPU seconds per worker process
        done, ready = 0, 0
        report(progress, "encode on ray", 0, total, workers=self.workers)

        def finished() -> Iterator[Encoded]:
            nonlocal ready
            while ready < len(results) and results[ready].complete:
                yield results[ready].encoded(models, time.perf_counter() - started, {
                    "workers": self.workers, "chunks": len(rows), "chunk_items": chunk,
                    # The workers' CPU time; its sum over the busiest worker's is the
                    # most a pass can gain from them where other work shares the CPUs.
                    "worker_cpu_seconds": sorted(round(v, 3) for v in cpu.values())})
                results[ready] = None  # handed over: the driver keeps no copy
                ready += 1

        yield from finished()  # empty batches
        try:
            for part in pipeline.iter_batches(batch_size=None, batch_format="numpy") if pipeline else ():
                for b in np.unique(part["batch"]).tolist():
                    mine = part["batch"] == b
                    results[b].fill({key: values[mine] for key, values in part.items()}, models)
                    done += int(mine.sum())
                for pid, seconds in zip(part["worker"].tolist(), part["cpu_seconds"].tolist()):
                    cpu[pid] = cpu.get(pid, 0.0) + seconds
                report(progress, "encode on ray", done, total, workers=self.workers)
                yield from finished()
        except EngineError:
            raise
        except Exception as exc:
            raise EngineError(f"encoding on Ray failed ({_first_line(exc)})") from exc
        if ready < len(results):  # a lost chunk must not become an item without codes
            raise EngineError(f"encoding on Ray returned {done} of {total} items; build again")


class _Filling:
    """One batch's codes and scores as the chunks come back."""

    def __init__(self, n: int) -> None:
        self.codes: dict[str, np.ndarray] = {}
        self.scores = np.full(n, np.nan, np.float32)
        self.done = np.zeros(n, bool)

    @property
    def complete(self) -> bool:
        return bool(self.done.all())

    def fill(self, part: dict, models) -> None:
        rows = part["position"]
        for method in models:
            if method not in self.codes:
                self.codes[method] = np.empty((len(self.done), *part[method].shape[1:]), part[method].dtype)
            self.codes[method][rows] = part[method]
        self.scores[rows] = part["novelty"]
        self.done[rows] = True

    def encoded(self, models, seconds: float, info: dict) -> Encoded:
        # A batch of no items has no part to take shapes from: empty codes of unknown width.
        codes = {m: self.codes.get(m, np.zeros((0, 0), np.float32)) for m in models}
        return Encoded(codes, self.scores, round(seconds, 3), info)


def _check_reachable(address: str) -> None:
    """Fail at once when nothing listens at a ``[ray://]HOST:PORT`` address.

    Ray itself retries an unreachable head node for minutes, logging each
    attempt; a closed port or an unknown host is better said in one line.
    """
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        return  # "auto" and other forms Ray understands: let it answer
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=REACH_SECONDS).close()
    except OSError as exc:
        raise EngineError(f"cannot reach the Ray cluster at {address} ({exc.strerror or exc}); check the address "
                          "(ray://HOST:10001 for Ray Client, HOST:6379 for the head node) and that the cluster "
                          "is up") from None


def _files(folder: Path) -> dict[str, bytes]:
    """A saved model's files, to travel through the object store."""
    return {p.name: p.read_bytes() for p in sorted(Path(folder).iterdir()) if p.is_file()}


class _Worker:
    """A Ray Data actor: the saved models, loaded once; one call encodes one chunk of items.

    Args:
        shared: Object references of the models' files and of every batch's inputs and OOV fractions.
        chunk: Items per chunk.
    """

    def __init__(self, shared: dict, chunk: int) -> None:
        import ray
        from threadpoolctl import threadpool_limits

        from ..encoders import load_encoder

        # One CPU per actor: BLAS threads beyond it would fight the other actors.
        self._threads = threadpool_limits(1)
        files = ray.get(shared["models"])
        self.batches, self.chunk = shared["batches"], chunk
        self._current: tuple[int, object, object] | None = None
        self.encoders = {}
        # The loaded models live in memory (NumPy graphs, arrays): the files can go.
        with tempfile.TemporaryDirectory(prefix="retrieval-ray-") as tmp:
            for method, (name, content) in files.items():
                folder = Path(tmp) / method
                folder.mkdir()
                for filename, data in content.items():
                    (folder / filename).write_bytes(data)
                self.encoders[method] = load_encoder(name, folder)

    def _batch(self, b: int):
        """Batch ``b``'s inputs and OOV fractions (chunks come batch after batch: one held at a time)."""
        import ray

        if self._current is None or self._current[0] != b:
            inputs, oov = ray.get(list(self.batches[b]))
            self._current = (b, inputs, oov)
        return self._current[1:]

    def __call__(self, batch: dict) -> dict:
        started = time.process_time()
        out: dict[str, list] = {"batch": [], "position": [], "novelty": [], **{m: [] for m in self.encoders}}
        for b, start in zip(np.asarray(batch["batch"]).tolist(), np.asarray(batch["start"]).tolist()):
            inputs, oov = self._batch(b)
            rows = slice(start, min(start + self.chunk, inputs.shape[0]))
            X = inputs[rows]
            for method, encoder in self.encoders.items():
                out[method].append(np.asarray(encoder.transform(X)))
            out["novelty"].append(novelty.item_novelty(self.encoders[novelty.METHOD], X,
                                                       None if oov is None else oov[rows]))
            out["position"].append(np.arange(rows.start, rows.stop))
            out["batch"].append(np.full(rows.stop - rows.start, b))
        result = {key: np.concatenate(parts) for key, parts in out.items()}
        items = len(result["position"])
        # Per item, so that the columns keep one row an item.
        result["cpu_seconds"] = np.full(items, (time.process_time() - started) / max(1, items))
        result["worker"] = np.full(items, os.getpid())
        return result
