"""Print the bits-vs-precision tables from benchmarks/hashing.sh's JSON reports.

Usage: python benchmarks/hashing_table.py RESULTS_FOLDER
(the OUT folder of hashing.sh: NAME-bitsB.eval.json and .manifest.json files).
"""
import json
import re
import sys
from pathlib import Path

BINARY = ("ae", "ae-median", "itq", "lsh", "ae>tfidf", "ae>float", "ae>pixels")


def main(folder: Path) -> None:
    reports = {}
    for path in sorted(folder.glob("*-bits*.eval.json")):
        data, bits = re.match(r"(.+)-bits(\d+)\.eval\.json", path.name).groups()
        reports.setdefault(data, {})[int(bits)] = json.loads(path.read_text())
    for data, by_bits in reports.items():
        bit_counts = sorted(by_bits)
        print(f"\n### {data}: precision@100 by code length\n")
        print("| method | " + " | ".join(f"{b} bits" for b in bit_counts) + " |")
        print("|---" * (len(bit_counts) + 1) + "|")
        for method in BINARY:
            cells = [by_bits[b]["methods"].get(method, {}).get("precision@100") for b in bit_counts]
            if any(c is not None for c in cells):
                print(f"| {method} | " + " | ".join("" if c is None else f"{c:.3f}" for c in cells) + " |")
        print(f"\n### {data}: every method (precision@10 / precision@100 / mAP@100 / query ms p50 / bytes per item)\n")
        print("| bits | method | p@10 | p@100 | mAP@100 | query ms p50 | bytes/item |")
        print("|---|---|---|---|---|---|---|")
        for b in bit_counts:
            for method, row in by_bits[b]["methods"].items():
                print(f"| {b} | {method} | {row['precision@10']:.3f} | {row['precision@100']:.3f} | "
                      f"{row['map@100']:.3f} | {row['query_ms_p50']:.2f} | {row['bytes_per_item']:.1f} |")
        for b in bit_counts:
            manifest = folder / f"{data}-bits{b}.manifest.json"
            if manifest.exists():
                m = json.loads(manifest.read_text())
                print(f"\n{data} {b} bits: build {m['build_seconds']:.0f} s; "
                      f"ae {m['methods']['ae'].get('training', {})}")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "benchmarks/results"))
