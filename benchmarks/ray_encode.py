"""Encoding throughput of the Ray engine with 1 and 2 workers, and its identity with the local engine (issue 13).

Takes an index built with the local engine (its models, stored inputs and
codes), starts one local Ray with ``--cpus`` CPUs, and runs the Ray engine's
encode pass (every method but the exact baseline, plus the novelty scores)
over the stored inputs tiled ``--repeat`` times, with each worker count in
turn, ``--runs`` times each. Reported per run:

* ``wall``: items / wall time of the pass, actors' start-up and model
  loading included (what a build pays);
* ``steady``: items after the first chunk / time from the first chunk's
  arrival to the last (the actors' throughput once running).

Beside them: the same pass in this process with one BLAS thread (the
workers' arithmetic without Ray), the local engine's pass (the in-memory
models of a build: TensorFlow for convolutions; all threads), and the load
average before and after each run (the machine is shared: a ratio measured under load is a lower
bound). Identity: the first pass's codes against the index's stored codes
(written by the local engine), and the hits of every item as a query
(k = 10 and 100) through both; beside it the local engine against itself
(its in-memory encoder on one BLAS thread against all threads).

Usage::

    python benchmarks/ray_encode.py --home /tmp/ray-home --name ng-local [--repeat 3] [--runs 2] \\
        [--out benchmarks/results/ray_encode_20ng.json]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from retrieval import novelty  # noqa: E402
from retrieval.modality import Batch  # noqa: E402
from retrieval.storage import Store  # noqa: E402
from retrieval.writer import IndexWriter  # noqa: E402


def load(home: str, name: str):
    """The index's writer, the models the Ray engine is given, and its stored inputs as a batch."""
    writer = IndexWriter.open(Store(home).require(name))
    models = {m: (info["encoder"], writer.folder.method(m)) for m, info in writer.manifest["methods"].items()
              if m != writer.modality.exact}
    inputs = writer.modality.concat_all(list(writer.stored_inputs("the benchmark").iter_inputs()))
    return writer, models, Batch([], inputs, writer.stored_oov())


def tiled(batch: Batch, repeat: int, modality) -> Batch:
    if repeat == 1:
        return batch
    oov = None if batch.oov is None else np.tile(batch.oov, repeat)
    return Batch([], modality.concat_all([batch.inputs] * repeat), oov)


def run_ray(engine_cls, models, batch, workers: int) -> dict:
    arrivals: list[tuple[float, int]] = []

    def progress(task, done, total, info):
        if done:
            arrivals.append((time.perf_counter(), done))

    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    with engine_cls(workers=workers) as engine:
        encoded = engine.encode(models, batch, progress=progress)
    wall = time.perf_counter() - started
    n = batch.inputs.shape[0]
    (t_first, first), (t_last, _) = arrivals[0], arrivals[-1]
    return {"workers": workers, "items": n, "wall_s": round(wall, 2), "wall_items_per_s": round(n / wall, 1),
            "steady_items_per_s": round((n - first) / (t_last - t_first), 1) if t_last > t_first else None,
            "chunks": encoded.info["chunks"], "worker_cpu_s": encoded.info["worker_cpu_seconds"],
            "load_before": round(load_before, 2),
            "load_after": round(os.getloadavg()[0], 2)}, encoded


def run_in_process(writer, models, batch) -> dict:
    """The same arithmetic in this process on one BLAS thread, with the models loaded as the actors load them."""
    from threadpoolctl import threadpool_limits

    from retrieval.encoders import load_encoder

    encoders = {m: load_encoder(name, folder) for m, (name, folder) in models.items()}
    with threadpool_limits(1):
        return _timed_pass(encoders, batch)


def _timed_pass(encoders, batch) -> dict:
    """Encode ``batch`` with every encoder and score its novelty, timed, with the load around it."""
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    for encoder in encoders.values():
        encoder.transform(batch.inputs)
    novelty.item_novelty(encoders[novelty.METHOD], batch.inputs, batch.oov)
    seconds = time.perf_counter() - started
    n = batch.inputs.shape[0]
    return {"items": n, "seconds": round(seconds, 2), "items_per_s": round(n / seconds, 1),
            "load_before": round(load_before, 2), "load_after": round(os.getloadavg()[0], 2)}


def compare(reference_index, codes, n: int, binary: bool, tie: float = 1e-5) -> dict:
    """``codes`` of the first ``n`` items against the codes stored in ``reference_index``, and their hits.

    Every stored item is a query (k = 10 and 100). A hit list counts as equal
    up to near-ties when, at every rank where the two lists name different
    items, their scores differ by less than ``tie``.
    """
    stored = reference_index.stored()
    ours = type(reference_index)(**reference_index._params())
    ours.add(codes[:n])
    mine = ours.stored()
    row = {}
    if binary:
        row["differing_bits"] = int(np.unpackbits(stored ^ mine).sum())
    else:
        row["max_abs_diff"] = float(np.abs(stored - mine).max())
    for k in (10, 100):
        (sa, a), (sb, b) = reference_index.search(stored, k), ours.search(stored, k)
        same = a == b
        near = same | (np.abs(sa - sb) < tie)
        row[f"identical_lists@{k}"] = f"{int(same.all(axis=1).sum())}/{n}"
        row[f"identical_up_to_near_ties@{k}"] = f"{int(near.all(axis=1).sum())}/{n}"
    return row


def _stored_scores(writer) -> np.ndarray:
    """Every item's stored novelty score, position order."""
    return writer.segments.per_item(lambda seg: np.load(seg.novelty, allow_pickle=False))


def identity(writer, encoded, n: int) -> dict:
    """The Ray codes of the first ``n`` items against the index's own (the local engine's)."""
    out = {method: compare(writer.segments.index(method), codes, n, bool(writer.manifest["methods"][method]["binary"]))
           for method, codes in encoded.codes.items()}
    out["novelty_max_abs_diff"] = float(np.abs(_stored_scores(writer) - encoded.scores[:n]).max())
    return out


def in_memory(models) -> dict:
    """The encoders as a build holds them right after fitting: Keras models (TensorFlow for convolutions,
    the NumPy dense stack for MLPs), not the NumPy graphs of their saved files."""
    from retrieval.encoders import load_encoder

    encoders = {}
    for method, (name, folder) in models.items():
        encoder = load_encoder(name, folder)
        if hasattr(encoder, "_encoder_graph"):  # an autoencoder: back to its Keras models
            encoder.encoder_  # noqa: B018  (loads the Keras file)
            if encoder._decoder_graph is not None:
                encoder.decoder_  # noqa: B018
            encoder._encoder_graph = encoder._decoder_graph = None
            encoder._compile_inference()
        encoders[method] = encoder
    return encoders


def local_engine(models, batch) -> dict:
    """The local engine's encode pass (every method and the novelty scores, all threads), timed."""
    return _timed_pass(in_memory(models), batch)


def local_thread_noise(writer, models, batch) -> dict:
    """The local engine against itself: its in-memory autoencoder on one BLAS thread vs on all.

    Its codes depend on the BLAS thread count at the float32 rounding level,
    as the Ray workers' (one thread each) do. (TensorFlow's own thread pool,
    which runs convolutions, is not limited here: documents only.)
    """
    from threadpoolctl import threadpool_limits

    method = novelty.METHOD
    encoder = in_memory({method: models[method]})[method]
    every = encoder.transform(batch.inputs)
    with threadpool_limits(1):
        one = encoder.transform(batch.inputs)
    index = writer.segments.index(method).template()
    index.add(every)
    return {method: compare(index, one, batch.inputs.shape[0], encoder.binary)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--repeat", type=int, default=3, help="Tile the stored inputs this many times.")
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    import ray

    from retrieval.engines.ray import RayEngine

    writer, models, batch = load(args.home, args.name)
    n = batch.inputs.shape[0]
    big = tiled(batch, args.repeat, writer.modality)
    result = {"index": args.name, "items": n, "repeat": args.repeat, "methods": sorted(models),
              "cpus": args.cpus, "nproc": os.cpu_count(), "runs": [], "in_process_1_thread": []}
    ray.init(address="local", num_cpus=args.cpus, include_dashboard=False, log_to_driver=False,
             logging_level="ERROR")
    try:
        first = None
        for run in range(args.runs):
            for workers in map(int, args.workers.split(",")):
                row, encoded = run_ray(RayEngine, models, big, workers)
                row["run"] = run
                result["runs"].append(row)
                print(json.dumps(row), flush=True)
                first = first or encoded
    finally:
        ray.shutdown()
    result["in_process_1_thread"] = run_in_process(writer, models, big)
    print(json.dumps(result["in_process_1_thread"]), flush=True)
    result["local_engine"] = local_engine(models, big)
    print(json.dumps(result["local_engine"]), flush=True)
    result["identity"] = identity(writer, first, n)
    if sp.issparse(batch.inputs):  # documents: the dense stack runs on BLAS threads
        result["local_engine_1_vs_all_threads"] = local_thread_noise(writer, models, batch)
    by_workers: dict[int, list] = {}
    for row in result["runs"]:
        by_workers.setdefault(row["workers"], []).append(row)
    best = {w: {k: max(r[k] or 0 for r in rows) for k in ("wall_items_per_s", "steady_items_per_s")}
            for w, rows in by_workers.items()}
    result["best"] = best
    if 1 in best and 2 in best:
        result["ratio_2_over_1"] = {k: round(best[2][k] / best[1][k], 2) for k in best[1]}
        # Load-independent bound: one worker's CPU seconds for the whole pass over the
        # busiest of two workers' (the wall-time ratio if each worker had a free core).
        one = min(sum(r["worker_cpu_s"]) for r in by_workers[1])
        two = min(max(r["worker_cpu_s"]) for r in by_workers[2])
        result["ratio_2_over_1"]["cpu_bound"] = round(one / two, 2)
    print(json.dumps({k: result[k] for k in ("best", "ratio_2_over_1", "identity", "local_engine_1_vs_all_threads")
                      if k in result}, indent=2))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
