"""The results of examples/gpu/run.sh from its JSON lines: a table (printed last by the
run), and with ``--record`` the rows written into examples/README.md (how the lead copies
the GPU numbers back: the GPU machine's checkout is thrown away).

    python examples/gpu/summary.py OUT/examples.json            # print the table
    python examples/gpu/summary.py OUT/examples.json --record   # and record the rows
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("json_lines")
    p.add_argument("--record", action="store_true")
    args = p.parse_args(argv)
    rows = []
    if os.path.exists(args.json_lines):
        with open(args.json_lines, encoding="utf-8") as f:
            rows = [json.loads(line) for line in f if line.strip()]
    print("| example | data | device | precision | batch | best epoch / run (max) | "
          "metrics | train s | wall s |")
    print("|---|---|---|---|---:|---|---|---:|---:|")
    for r in rows:
        metrics = ", ".join(f"{k} {v:.4f}" for k, v in r["metrics"].items())
        print(f"| {r['example']} | {r['data']} | {r['device']} | "
              f"{'bf16' if r['mixed_precision'] else 'fp32'} | {r['batch_size']} | "
              f"{r['best_epoch']} / {r['epochs_run']} ({r['max_epochs']}) | {metrics} | "
              f"{r['train_seconds']:.0f} | {r['wall_seconds']:.0f} |")
    if args.record and rows:
        from common import record_row
        os.environ.setdefault("KERAS_BACKEND", rows[0]["backend"])
        for r in rows:
            record_row(r)
    return rows


if __name__ == "__main__":
    main()
