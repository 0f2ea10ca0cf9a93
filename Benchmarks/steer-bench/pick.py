#!/usr/bin/env python3
"""Pick a setting from a steer-bench sweep report: the smallest search parameter whose recall@k reaches a target.

    pick.py REPORT --recall 0.95 --field value   # the parameter value (e.g. efSearch 32)
    pick.py REPORT --recall 0.95 --field qps     # the highest QPS measured at that value (saturation)

Exits 1 with a message when no level reaches the target.
"""

from __future__ import annotations

import argparse
import json
import sys


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("report")
    ap.add_argument("--recall", type=float, required=True)
    ap.add_argument("--field", choices=["value", "qps"], required=True)
    args = ap.parse_args()
    levels = json.load(open(args.report))["levels"]
    passing = sorted(
        {
            lv["value"]
            for lv in levels
            if (lv.get("recall_at_k") or 0) >= args.recall and lv["value"] is not None
        }
    )
    if not passing:
        sys.exit(f"{args.report}: no setting reaches recall {args.recall}")
    value = passing[0]
    if args.field == "value":
        print(value)
    else:
        print(int(max(lv["qps"] for lv in levels if lv["value"] == value)))


if __name__ == "__main__":
    main()
