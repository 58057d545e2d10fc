#!/usr/bin/env python
"""Print the README's results column from results records: one row per study, fixture and full runs apart.

    python scripts/results_table.py                 # the records the main job wrote, under runs/models/
    python scripts/results_table.py models          # records of your own runs
"""

import json
import sys
from pathlib import Path


def describe(record: dict) -> str:
    m = record["metrics"]
    if "accuracy" in m:
        headline = f"{m['accuracy']:.1%} accuracy"
    else:
        headline = f"macro F1 {m['f1_macro']:.2f}, Hamming loss {m['hamming_loss']:.3f}"
    return f"{headline}, {record['arch']}, {record['epochs']} epochs, {record['seconds']:.0f} s training on {record['device']}"


def main(folder: str = "runs/models") -> int:
    records = sorted(Path(folder).glob("*/results.json"))
    if not records:
        print(f"no results records under {folder}/; run `python scripts/run_notebooks.py` first", file=sys.stderr)
        return 1
    for kind in ("fixture", "full"):
        rows = [json.loads(p.read_text()) for p in records]
        rows = [r for r in rows if r["fixture"] == (kind == "fixture")]
        if rows:
            print(f"\n{kind} runs\n| study | result |\n|---|---|")
            for r in rows:
                print(f"| {r['study']} | {describe(r)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
