"""Choose the demo's digits autoencoder on a validation split of the demo's training digits only.

The demo (retrieval/demo.py) splits scikit-learn's 1,797 digits 80/20 and
scores precision@20 of the 20 % held-out digits. Its test digits are never
used here: the demo's 80 % training portion is split again, several times
(different seeds), into an indexed part and validation queries; every
candidate ImagesConfig is fitted on the indexed part, searched exactly as
the demo searches (the modality's encoders, their metric, a flat index),
and scored by mean precision@20 over the splits. The pixels and PCA
baselines are scored on the same splits.

Each line gives the mean over the splits, the spread (max - min) and the
epochs each fit ran before early stopping.

Usage (``PYTHONPATH=.`` from a checkout, so its ``retrieval`` is imported):
    python benchmarks/digits_validation.py              # every candidate
    python benchmarks/digits_validation.py '{"code_dim": 32}' ...  # given candidates (JSON ImagesConfig fields)
    DIGITS_SPLITS=1 python benchmarks/digits_validation.py ...     # screening on the first split alone
"""
from __future__ import annotations

import json
import os
import sys
import time
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from retrieval.ann import make_index  # noqa: E402
from retrieval.config import ImagesConfig  # noqa: E402
from retrieval.encoders.autoencoder.training import _partial_whitening  # noqa: E402
from retrieval.demo import DIGITS_CONFIG, _split, digits  # noqa: E402
from retrieval.modality import IMAGES  # noqa: E402

K = 20
#: Whitening exponents also scored on the codes of each unwhitened candidate.
WHITEN = (0.15, 0.25, 0.35)
#: Validation splits of the demo's training portion (seeds of the re-split; DIGITS_SPLITS overrides).
SPLIT_SEEDS = tuple(int(s) for s in os.environ.get("DIGITS_SPLITS", "1,2,3").split(","))

#: Today's demo config first, then one change at a time around it, then combinations.
CANDIDATES = [
    {"code_dim": 16, "filters": [32, 64], "epochs": 60, "batch_size": 64, "augment": 0.0, "whiten": 0.0},
]


def _variants(base: dict) -> list[dict]:
    changes = [{"code_dim": 32}, {"code_dim": 24}, {"noise": 0.1}, {"noise": 0.2}, {"decoder": "deconv"},
               {"filters": [64, 128]}, {"whiten": 0.25}, {"learning_rate": 2e-3}, {"batch_size": 32},
               {"epochs": 100}]
    return [base | change for change in changes]


def precision(method_codes: tuple, y_index: np.ndarray, y_query: np.ndarray, metric: str) -> float:
    """precision@K of the queries against the indexed part, searched as the index searches."""
    index_codes, query_codes = method_codes
    index = make_index("flat", metric, len(index_codes))
    index.add(index_codes)
    _, positions = index.search(query_codes, K)
    return float((y_index[positions] == y_query[:, None]).mean())


def score(config: ImagesConfig, splits: list, methods: tuple[str, ...] = ("ae",)) -> dict:
    """Mean precision@K per method over the validation splits, and the fit time."""
    out = {m: [] for m in methods}
    seconds, epochs = 0.0, []
    for (X_index, y_index, X_query, y_query) in splits:
        encoders = IMAGES.encoders(config, X_index.shape)
        for method in methods:
            encoder = encoders[method]
            started = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                encoder.fit(X_index)
            if method == "ae":
                seconds += time.perf_counter() - started
                epochs.append(len(encoder.history_["loss"]))
            codes = (encoder.transform(X_index), encoder.transform(X_query))
            out[method].append(precision(codes, y_index, y_query, encoder.metric))
            if method == "ae" and config.whiten == 0:
                # The same codes partially whitened (fitted on the indexed part): --whiten without a refit.
                for power in WHITEN:
                    project = _partial_whitening(codes[0], power)
                    whitened = (codes[0] @ project, codes[1] @ project)
                    out.setdefault(f"ae whiten {power}", []).append(
                        precision(whitened, y_index, y_query, encoder.metric))
    return ({m: float(np.mean(v)) for m, v in out.items()} | {f"{m} spread": float(np.ptp(v)) for m, v in out.items()}
            | {"fit_s": seconds / len(splits), "epochs": epochs})


def main() -> None:
    pixels, labels = digits()
    train, _test = _split(len(pixels))  # the demo's split; its test digits are not touched
    splits = []
    for seed in SPLIT_SEEDS:
        index_rows, query_rows = _split(len(train), seed=seed)
        rows_i, rows_q = train[index_rows], train[query_rows]
        splits.append((pixels[rows_i], labels[rows_i], pixels[rows_q], labels[rows_q]))
    print(f"{len(train)} training digits; {len(SPLIT_SEEDS)} validation splits of "
          f"{len(splits[0][0])} indexed / {len(splits[0][2])} queries; precision@{K}, mean over splits", flush=True)
    base = ImagesConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in CANDIDATES[0].items()})
    baselines = score(base, splits, methods=("pca", "pixels"))
    print(f"baselines: pca {baselines['pca']:.4f} (spread {baselines['pca spread']:.4f})  "
          f"pixels {baselines['pixels']:.4f} (spread {baselines['pixels spread']:.4f})", flush=True)
    given = [json.loads(arg) for arg in sys.argv[1:]]
    if given:
        candidates = given
    else:
        candidates = CANDIDATES + _variants(CANDIDATES[0]) + [json.loads(json.dumps(DIGITS_CONFIG.to_dict()))]
    pca = {base.code_dim: baselines["pca"]}  # PCA has the code's dimension, as in an index
    for candidate in candidates:
        fields = {k: tuple(v) if isinstance(v, list) else v for k, v in candidate.items()}
        config = ImagesConfig(**fields)
        if config.code_dim not in pca:
            pca[config.code_dim] = score(config, splits, methods=("pca",))["pca"]
        result = score(config, splits)
        whitened = "".join(f"  [whiten {p}: {result[f'ae whiten {p}']:.4f}]" for p in WHITEN
                           if f"ae whiten {p}" in result)
        print(f"ae {result['ae']:.4f} (spread {result['ae spread']:.4f}){whitened}  "
              f"(pca-{config.code_dim} {pca[config.code_dim]:.4f})  fit {result['fit_s']:.1f} s, "
              f"epochs {result['epochs']}  {json.dumps(candidate)}", flush=True)


if __name__ == "__main__":
    main()
