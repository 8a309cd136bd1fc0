"""The best fit a persistent random walk can reach on MSD curves, from its exact expected MSD.

    python scripts/prw_exact_fit.py                       # the three celltrackR data sets
    python scripts/prw_exact_fit.py --path my_tracks.csv --dx 2 3 --mcs-per-frame 1 2
    python scripts/prw_exact_fit.py --classes 1 2 3 --dx 4 --mcs-per-frame 1    # mixtures of walker classes

For each tracks CSV, lattice spacing dx, MCS per frame and number of walker classes, prints the optimum of
the statistics-fit loss (no simulation noise) and its mean relative MSD error: the floor that a fit can reach.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch

from slm.baselines.prw_exact import prw_exact_fit
from slm.config import ArgumentParser
from slm.errors import InputError
from slm.io import read_tracks
from slm.stats import track_msd

DATA = Path(__file__).resolve().parents[1] / "data" / "celltrackr"


def main() -> None:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--path", nargs="+", type=Path,
                        default=[DATA / "TCells.csv", DATA / "BCells.csv", DATA / "Neutrophils.csv"])
    parser.add_argument("--dx", nargs="+", type=float, default=[math.sqrt(10), 4.0], help="lattice spacings (um)")
    parser.add_argument("--mcs-per-frame", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--lags", type=int, default=10)
    parser.add_argument("--loss", choices=["relative", "squared"], default="relative")
    parser.add_argument("--classes", nargs="+", type=int, default=[1], help="walker classes of the mixture")
    args = parser.parse_args()
    print("| data | dx | MCS/frame | classes | p_center | p_resample | weights | msd_rel_error |")
    print("|---|---|---|---|---|---|---|---|")
    for path in args.path:
        try:
            target = torch.tensor(track_msd(read_tracks(path, key="--path"), args.lags, key="--lags"))
        except InputError as err:
            sys.exit(f"error: {err}")
        for dx in args.dx:
            for mcs in args.mcs_per_frame:
                for classes in args.classes:
                    best = prw_exact_fit(target, mcs, dx, args.loss, classes)
                    cells = [_fmt(best.get(name, 1.0)) for name in ("p_center", "p_resample", "weights")]
                    print(f"| {path.stem} | {dx:.4g} | {mcs} | {classes} | {' | '.join(cells)} | "
                          f"{best['msd_rel_error']:.4f} |")


def _fmt(value: float | list[float]) -> str:
    return ", ".join(f"{v:.4f}" for v in (value if isinstance(value, list) else [value]))


if __name__ == "__main__":
    main()
