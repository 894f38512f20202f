#!/usr/bin/env bash
# Issue 4, bits vs precision: learned binary codes (ae), their float phase
# thresholded at the medians (ae-median), ITQ and LSH at 16/32/64/128 bits,
# two-stage search (ae>tfidf, ae>float, ae>pixels), and the float methods,
# on the protocols of issues 2 and 3 (k = 100).
# Usage: bash benchmarks/hashing.sh [docs|images|all] [bits ...]
# Needs ../shared/data/20news-bydate.tar.gz and, for images,
# apt-get install -y dataset-fashion-mnist. Prints one JSON report per run,
# then: python benchmarks/hashing_table.py "$OUT"
set -euo pipefail
PART=${1:-all}; shift || true
BITS=${*:-64 16 32 128}
NG=${NG:-../shared/data/20news-bydate.tar.gz}
FASHION=${FASHION:-/usr/share/datasets/fashion-mnist}
export RETRIEVAL_HOME=${RETRIEVAL_HOME:-$(mktemp -d)}
OUT=${OUT:-benchmarks/results}
mkdir -p "$OUT"

for bits in $BITS; do
  # The float baselines are the same at every bit count: built once, beside 64 bits.
  if [ "$bits" = 64 ]; then docs_base=lsa,tfidf,itq,lsh; img_base=pca,pixels,itq,lsh; else docs_base=itq,lsh; img_base=itq,lsh; fi
  if [ "$PART" != images ]; then
    name=20ng-bits$bits
    retrieval index docs "$NG/20news-bydate-train" --name $name --labels-from-folders --strip email --force --json \
      --bits $bits --baselines $docs_base --baseline-dim 128 > "$OUT/$name.manifest.json"
    retrieval evaluate $name --queries "$NG/20news-bydate-test" --labels-from-folders --strip email -k 100 --json \
      > "$OUT/$name.eval.json"
    echo "== $name"; cat "$OUT/$name.eval.json"
  fi
  if [ "$PART" != docs ]; then
    name=fashion-bits$bits
    retrieval index images "$FASHION/train-images-idx3-ubyte.gz" --name $name --force --json \
      --bits $bits --baselines $img_base > "$OUT/$name.manifest.json"
    retrieval evaluate $name --queries "$FASHION/t10k-images-idx3-ubyte.gz" -k 100 --json > "$OUT/$name.eval.json"
    echo "== $name"; cat "$OUT/$name.eval.json"
  fi
done
