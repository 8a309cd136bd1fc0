"""Plot fitted MSD curves against their targets: ``python scripts/plot_msd.py RUN_DIR ... --out FILE.png``.

Reads ``msd.json`` from each statistics-fit run folder; the legend names each run by its folder, or by
``--labels``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from matplotlib.figure import Figure


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--labels", nargs="+")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    labels = args.labels or [run.name for run in args.runs]
    if len(labels) != len(args.runs):
        raise SystemExit("error: --labels needs one label per run")
    figure = Figure(figsize=(3.6 * len(args.runs), 3.2), layout="tight")
    axes = figure.subplots(1, len(args.runs), squeeze=False)
    for axis, run, label in zip(axes[0], args.runs, labels, strict=True):
        path = run / "msd.json"
        if not path.is_file():
            raise SystemExit(f"error: {path} not found (is {run} a statistics-fit run folder?)")
        curves = json.loads(path.read_text())
        results = json.loads((run / "results.json").read_text())
        scale = curves["frame_interval"] or 1
        time = [lag * scale for lag in curves["lag"]]
        axis.plot(time, curves["target"], "ko", label="data")
        axis.plot(time, curves["fitted"], "-", color="tab:red", label="fitted PRW")
        lists = any(isinstance(v, list) for v in results["params"].values())  # a mixture: one line per parameter
        params = ("\n" if lists else ", ").join(f"{k}=" + "/".join(f"{x:.3f}" for x in (v if lists and
                                                 isinstance(v, list) else [v])) for k, v in results["params"].items())
        axis.set_title(f"{label}\n{params}\nmean rel. error {results['metrics']['msd_rel_error']:.3f}", fontsize=9)
        axis.set_xlabel("lag (s)" if curves["frame_interval"] else "lag (frames)")
        axis.set_ylabel("MSD")
        axis.legend(fontsize=8)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
