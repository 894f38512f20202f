#!/usr/bin/env bash
# Protocol "20NG bydate-clean" (issue 2): index the 11,314 training postings,
# query with the 7,532 test postings, k = 100, every method side by side.
# Usage: bash benchmarks/20ng.sh [path/to/20news-bydate.tar.gz]
set -euo pipefail
DATA=${1:-../shared/data/20news-bydate.tar.gz}
export RETRIEVAL_HOME=${RETRIEVAL_HOME:-$(mktemp -d)}
OUT=${OUT:-benchmarks/results}
mkdir -p "$OUT"
common=(--labels-from-folders --strip email --force --json)
queries=(--queries "$DATA/20news-bydate-test" --labels-from-folders --strip email -k 100 --json)

run() {  # name, extra build options...
  local name=$1; shift
  local start=$SECONDS
  if [ "${SKIP_BUILD:-}" != 1 ]; then
    retrieval index docs "$DATA/20news-bydate-train" --name "$name" "${common[@]}" "$@" > "$OUT/$name.manifest.json"
  fi
  retrieval evaluate "$name" "${queries[@]}" --plot "$OUT/$name-pr.png" > "$OUT/$name.eval.json"
  echo "== $name (build + evaluate: $((SECONDS - start)) s wall; build alone: see build_seconds in $OUT/$name.manifest.json)"
  cat "$OUT/$name.eval.json"
}

run 20ng-32                                                    # AE-32 vs LSA-32 vs TF-IDF
run 20ng-10 --code-dim 10 --baseline-dim 50 --baselines lsa    # AE-10 vs LSA-50
run 20ng-32-layerwise --pretrain layerwise --baselines none    # layer-wise pre-training
retrieval plot 20ng-32 --out "$OUT/20ng-map.png"
