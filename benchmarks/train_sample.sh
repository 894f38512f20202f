#!/usr/bin/env bash
# Training on a sample (issue 13): precision@100 of models fitted on a seeded
# uniform sample of the collection (--train-sample N) against models fitted on
# everything (--train-sample 0); every item is indexed either way.
# Usage: bash benchmarks/train_sample.sh docs|images [N ...]
#   docs:   20NG bydate (11,314 training postings), queries: the 7,532 test postings
#   images: Fashion-MNIST (60,000 training images), queries: 1,000 test images
set -euo pipefail
part=$1; shift
NG=${NG:-/tmp/ng}
FASHION=${FASHION:-/usr/share/datasets/fashion-mnist}
export RETRIEVAL_HOME=${RETRIEVAL_HOME:-$(mktemp -d)}
OUT=${OUT:-benchmarks/results}
RETRIEVAL=${RETRIEVAL:-retrieval}
mkdir -p "$OUT"
for n in "$@"; do
  start=$SECONDS
  if [ "$part" = docs ]; then
    name=20ng-sample-$n
    $RETRIEVAL index docs "$NG/20news-bydate-train" --name "$name" --labels-from-folders --strip email \
      --baselines lsa --train-sample "$n" --force --json > "$OUT/$name.manifest.json"
    $RETRIEVAL evaluate "$name" --queries "$NG/20news-bydate-test" --labels-from-folders --strip email \
      --methods ae,lsa -k 100 --json > "$OUT/$name.eval.json"
  else
    name=fashion-sample-$n
    $RETRIEVAL index images "$FASHION/train-images-idx3-ubyte.gz" --name "$name" --baselines pca \
      --train-sample "$n" --force --json > "$OUT/$name.manifest.json"
    $RETRIEVAL evaluate "$name" --queries "$FASHION/t10k-images-idx3-ubyte.gz" --methods ae,pca --limit 1000 \
      -k 100 --json > "$OUT/$name.eval.json"
  fi
  echo "== $name: $((SECONDS - start)) s wall (build + evaluate)"
  python3 -c "import json,sys; m=json.load(open(sys.argv[1])); e=json.load(open(sys.argv[2])); print('build_seconds', m['build_seconds'], 'training', m.get('training')); [print(k, {x: round(v[x],4) for x in v if x.startswith(('precision','map'))}) for k,v in e['methods'].items()]" "$OUT/$name.manifest.json" "$OUT/$name.eval.json"
done
