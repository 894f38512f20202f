#!/usr/bin/env bash
# Protocol "Fashion-MNIST" (issue 3): index the 60,000 training images, query
# with the 10,000 test images, k = 100, every method side by side.
# Needs: apt-get install -y dataset-fashion-mnist
set -euo pipefail
DATA=${1:-/usr/share/datasets/fashion-mnist}
export RETRIEVAL_HOME=${RETRIEVAL_HOME:-$(mktemp -d)}
OUT=${OUT:-benchmarks/results}
mkdir -p "$OUT"
start=$SECONDS
retrieval index images "$DATA/train-images-idx3-ubyte.gz" --name fashion --force --json > "$OUT/fashion.manifest.json"
retrieval evaluate fashion --queries "$DATA/t10k-images-idx3-ubyte.gz" -k 100 --plot "$OUT/fashion-pr.png" --json \
  > "$OUT/fashion.eval.json"
echo "== fashion (build + evaluate: $((SECONDS - start)) s wall; build alone: see build_seconds in $OUT/fashion.manifest.json)"
cat "$OUT/fashion.eval.json"
retrieval query fashion --like 0 -k 12 --show "$OUT/fashion-neighbours.png" > /dev/null
retrieval plot fashion --out "$OUT/fashion-map.png"
