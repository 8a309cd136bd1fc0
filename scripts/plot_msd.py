"""Plot fitted MSD curves against their targets: ``python scripts/plot_msd.py RUN_DIR ... --out FILE.png``.

Reads ``msd.json`` from each statistics-fit run folder; the legend names each run by its folder, or by
``--labels``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from slm.config import ArgumentParser
from slm.plots import msd_runs_figure


def main() -> None:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--labels", nargs="+")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    labels = args.labels or [run.name for run in args.runs]
    if len(labels) != len(args.runs):
        raise SystemExit("error: --labels needs one label per run")
    runs = []
    for run, label in zip(args.runs, labels, strict=True):
        path = run / "msd.json"
        if not path.is_file():
            raise SystemExit(f"error: {path} not found (is {run} a statistics-fit run folder?)")
        runs.append((label, json.loads(path.read_text()), json.loads((run / "results.json").read_text())))
    figure = msd_runs_figure(runs)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
