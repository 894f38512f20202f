"""VQ-VAE codes against product quantisation and learned bits at equal bytes (issue 14).

Protocols of issues 2 and 3, k = 100: 20 Newsgroups bydate (the 11,314
training postings indexed, ``strip="email"``, the 7,532 test postings as
queries) and Fashion-MNIST (60,000 training images indexed, 10,000 test
images as queries). Every method goes through the library's encoders and
FAISS indexes (:class:`retrieval.ann.PQIndex` for the quantised ones):

* ``ae-bits``: learned binary codes (``binarize="learned"``), ``--bits`` bits;
* ``vq``: the VQ autoencoder, ``groups`` bytes per item, searched with the
  query float (asymmetric distance on the learned codebook);
* ``pq-ae``: FAISS ``IndexPQ(d, groups, 8)`` of the VQ run's float-phase codes
  (the float autoencoder before VQ training: the same network, same run);
* ``pq-lsa`` (documents) / ``pq-pca`` (images): ``IndexPQ`` of LSA / PCA;
* ``ae-float``, ``lsa`` / ``pca``: the float codes those PQ indexes compress.

``--validation`` indexes 85 % of the training part and queries with the
other 15 % (stratified, seed 0): settings are chosen there, never on the
test queries. ``--train-subset N`` fits the encoders on N indexed items
(every indexed item is still encoded). Prints one JSON line per method.

Usage::

    python benchmarks/vq_pq.py 20ng --methods vq,pq-lsa --code-dim 32 [--validation]
    python benchmarks/vq_pq.py fashion --methods vq,pq-pca --train-subset 20000
"""
from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from retrieval.ann import FlatIndex, PQIndex  # noqa: E402
from retrieval.errors import RetrievalWarning  # noqa: E402

NG = Path("/tmp/ng")
FASHION = Path("/usr/share/datasets/fashion-mnist")


def load(corpus: str, validation: bool):
    """``(train inputs, train labels, query inputs, query labels)`` in the encoders' input form."""
    if corpus == "20ng":
        from retrieval.sources.documents import read_documents
        from retrieval.vectorize import TextVectorizer

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RetrievalWarning)  # postings empty once stripped
            train = read_documents(NG / "20news-bydate-train", labels_from_folders=True, strip="email").items
            test = [] if validation else read_documents(NG / "20news-bydate-test", labels_from_folders=True,
                                                        strip="email").items
        texts, labels = [it.text for it in train], np.array([it.label for it in train])
        q_texts, q_labels = [it.text for it in test], np.array([it.label for it in test])
        if validation:
            keep, held = _split(labels)
            q_texts, q_labels = [texts[i] for i in held], labels[held]
            texts, labels = [texts[i] for i in keep], labels[keep]
        vec = TextVectorizer(max_features=10_000)
        return vec.fit_transform(texts), labels, vec.transform(q_texts), q_labels
    from retrieval.sources.images import read_images

    train = read_images(FASHION / "train-images-idx3-ubyte.gz")
    labels = np.array([it.label for it in train.items])
    if validation:
        keep, held = _split(labels)
        return train.pixels[keep], labels[keep], train.pixels[held], labels[held]
    test = read_images(FASHION / "t10k-images-idx3-ubyte.gz")
    return train.pixels, labels, test.pixels, np.array([it.label for it in test.items])


def _split(labels: np.ndarray, share: float = 0.15):
    """Stratified ``(indexed, queries)`` rows of the training part, seed 0."""
    rng = np.random.default_rng(0)
    held = []
    for label in np.unique(labels):
        rows = np.flatnonzero(labels == label)
        held.extend(rng.choice(rows, int(round(share * len(rows))), replace=False))
    mask = np.zeros(len(labels), bool)
    mask[held] = True
    return np.flatnonzero(~mask), np.flatnonzero(mask)


def score(index, queries, q_labels, labels, k: int = 100) -> dict:
    started = time.perf_counter()
    _, positions = index.search(queries, k)
    seconds = time.perf_counter() - started
    hits = (labels[np.maximum(positions, 0)] == q_labels[:, None]) & (positions >= 0)
    return {"p@10": round(float(hits[:, :10].mean()), 4), "p@100": round(float(hits[:, :k].mean()), 4),
            "search_ms_per_query": round(1000 * seconds / len(queries), 3)}


def pq(vectors, queries, groups: int, metric: str = "cosine") -> PQIndex:
    index = PQIndex(metric, groups)
    index.train(vectors, len(vectors))
    index.add(vectors)
    return index


def flat(vectors, metric: str = "cosine") -> FlatIndex:
    index = FlatIndex(metric)
    index.add(vectors)
    return index


def variants(enc, X_fit, X, Q, qy, y, groups: int, emit) -> None:
    """Other searches of one fitted VQ model (diagnostics, not in the library).

    * ``vq-float-l2``: the group-split codes before quantisation, exact L2
      (what the VQ search approximates: its ceiling);
    * ``pq-ae-vq-space`` (printed after ``pq-ae``): FAISS PQ of the float
      phase's codes in the space VQ quantises (``vq_space``), L2;
    * ``vq-diag-W``: the VQ search after scaling every code dimension by its
      training variance ** -W, queries and codebook alike (a diagonal partial
      whitening, which keeps the groups apart; the float codes are compared
      after a partial whitening, ``whiten``).
    """
    codes, queries = enc.transform(X), enc.transform(Q)
    emit("vq-float-l2", score(flat(codes, "l2"), queries, qy, y), bytes=4 * codes.shape[1])
    variance = enc.transform(X_fit).var(axis=0)
    for w in (0.25, 0.5):
        scale = (np.maximum(variance, 1e-12) ** -w).astype(np.float32)
        scale /= scale.mean()
        index = PQIndex("l2", groups)
        index.train(None, X.shape[0], codebook=enc.codebook_ * scale.reshape(groups, 1, -1))
        index.add(codes * scale)
        emit(f"vq-diag-{w}", score(index, queries * scale, qy, y), bytes=groups)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("corpus", choices=["20ng", "fashion"])
    ap.add_argument("--methods", default="ae-bits,vq,pq-linear")
    ap.add_argument("--validation", action="store_true")
    ap.add_argument("--train-subset", type=int, default=None)
    ap.add_argument("--bits", type=int, default=64)
    ap.add_argument("--groups", type=int, default=8)
    ap.add_argument("--codebook", type=int, default=256)
    ap.add_argument("--code-dim", type=int, default=32)
    ap.add_argument("--linear-dim", type=int, default=None, help="LSA/PCA dimension (default: --code-dim)")
    ap.add_argument("--options", default="{}", help="JSON: more autoencoder keyword arguments")
    ap.add_argument("--freeze-encoder", action="store_true",
                    help="the VQ phase trains the codebook and the decoder only (vq_freeze_encoder=True)")
    ap.add_argument("--vq-variants", action="store_true",
                    help="also search the VQ model's codes other ways (diagnostics: see variants())")
    ap.add_argument("--vq-lr-scale", type=float, default=None,
                    help="diagnostic: the VQ phase's learning rate times this")
    args = ap.parse_args()
    methods = args.methods.split(",")
    if args.vq_lr_scale:  # a diagnostic: wraps the VQ phase's schedule
        import dataclasses

        from retrieval.encoders.autoencoder import training

        phase_lr = training.vq_phase

        def slower(encoder, decoder, inputs, targets, loss, schedule, *a, **kw):
            schedule = dataclasses.replace(schedule, learning_rate=schedule.learning_rate * args.vq_lr_scale)
            return phase_lr(encoder, decoder, inputs, targets, loss, schedule, *a, **kw)
        training.vq_phase = slower
    X, y, Q, qy = load(args.corpus, args.validation)
    rng = np.random.default_rng(0)
    fit_rows = (np.sort(rng.choice(X.shape[0], args.train_subset, replace=False))
                if args.train_subset and args.train_subset < X.shape[0] else np.arange(X.shape[0]))
    X_fit = X[fit_rows]
    common = {"corpus": args.corpus, "split": "validation" if args.validation else "test",
              "indexed": int(X.shape[0]), "queries": int(Q.shape[0]), "fitted_on": int(len(fit_rows))}
    options = json.loads(args.options)
    if args.freeze_encoder:  # the library's option, kept as a flag so earlier commands still run
        options["vq_freeze_encoder"] = True
    if args.corpus == "20ng":
        from retrieval.encoders.autoencoder import TextAutoencoder as AE
    else:
        from retrieval.encoders.autoencoder import ConvAutoencoder as AE

    def emit(method, result, **extra):
        print(json.dumps({**common, "method": method, **extra, **result}), flush=True)

    if "ae-bits" in methods:
        started = time.perf_counter()
        enc = AE(code_dim=args.bits, binarize="learned", **options).fit(X_fit)
        fit = round(time.perf_counter() - started)
        from retrieval.ann import BinaryFlatIndex

        index = BinaryFlatIndex("hamming")
        index.add(enc.transform(X))
        emit("ae-bits", score(index, enc.transform(Q), qy, y), bytes=args.bits // 8, fit_seconds=fit)
    if "vq" in methods:
        started = time.perf_counter()
        enc = AE(code_dim=args.code_dim, quantize="vq", groups=args.groups, codebook=args.codebook,
                 **options).fit(X_fit)
        fit = round(time.perf_counter() - started)
        index = PQIndex(enc.metric, args.groups)
        index.train(None, X.shape[0], codebook=enc.codebook_)
        index.add(enc.transform(X))
        from retrieval.encoders.vq import usage

        used = usage(index.codes(), args.codebook)
        emit("vq", score(index, enc.transform(Q), qy, y), bytes=args.groups, fit_seconds=fit,
             codebook_used=round(float(used.mean()), 3), restarted=enc.history_["vq"]["restarted"],
             vq_epochs=len(enc.history_["vq"]["loss"]), float_epochs=len(enc.history_["loss"]),
             vq_space=enc.vq_space, options={"code_dim": args.code_dim, **options})
        if args.vq_variants:
            variants(enc, X_fit, X, Q, qy, y, args.groups, emit)
        flt = enc.derive("none", X_fit)
        V, VQ = flt.transform(X), flt.transform(Q)
        emit("ae-float", score(flat(V), VQ, qy, y), bytes=4 * V.shape[1])
        emit("pq-ae", score(pq(V, VQ, args.groups), VQ, qy, y), bytes=args.groups)
        if args.vq_variants:  # PQ of the float phase's codes in the space VQ quantises (L2)
            def vq_space(rows):
                raw = flt._predict(flt._input_matrix(rows))
                return enc._vq_parts(raw).reshape(len(raw), -1)
            R, RQ = vq_space(X), vq_space(Q)
            emit("pq-ae-vq-space", score(pq(R, RQ, args.groups, "l2"), RQ, qy, y), bytes=args.groups)
    if "pq-linear" in methods:
        from retrieval.encoders.baselines import LSAEncoder, PCAEncoder

        dim = args.linear_dim or args.code_dim
        name = "lsa" if args.corpus == "20ng" else "pca"
        enc = (LSAEncoder(dim) if name == "lsa" else PCAEncoder(dim)).fit(X_fit)
        V, VQ = enc.transform(X), enc.transform(Q)
        emit(name, score(flat(V, enc.metric), VQ, qy, y), bytes=4 * dim)
        emit(f"pq-{name}", score(pq(V, VQ, args.groups, enc.metric), VQ, qy, y), bytes=args.groups, dim=dim)


if __name__ == "__main__":
    main()
