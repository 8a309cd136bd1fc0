"""The best fit a persistent random walk can reach on MSD curves, from its exact expected MSD.

    python scripts/prw_exact_fit.py                       # the three celltrackR data sets
    python scripts/prw_exact_fit.py --path my_tracks.csv --dx 2 3 --mcs-per-frame 1 2

For each tracks CSV, lattice spacing dx and MCS per frame, prints the optimum of the statistics-fit
loss (no simulation noise) and its mean relative MSD error: the floor that a fit can reach.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch

from slm.baselines.prw_exact import prw_exact_fit
from slm.errors import InputError
from slm.stats import read_tracks, track_msd

DATA = Path(__file__).resolve().parents[1] / "data" / "celltrackr"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--path", nargs="+", type=Path,
                        default=[DATA / "TCells.csv", DATA / "BCells.csv", DATA / "Neutrophils.csv"])
    parser.add_argument("--dx", nargs="+", type=float, default=[math.sqrt(10), 4.0], help="lattice spacings (um)")
    parser.add_argument("--mcs-per-frame", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--lags", type=int, default=10)
    parser.add_argument("--loss", choices=["relative", "squared"], default="relative")
    args = parser.parse_args()
    print("| data | dx | MCS/frame | p_center | p_resample | msd_rel_error |")
    print("|---|---|---|---|---|---|")
    for path in args.path:
        try:
            target = torch.tensor(track_msd(read_tracks(path, key="--path"), args.lags, key="--lags"))
        except InputError as err:
            sys.exit(f"error: {err}")
        for dx in args.dx:
            for mcs in args.mcs_per_frame:
                best = prw_exact_fit(target, mcs, dx, args.loss)
                print(f"| {path.stem} | {dx:.4g} | {mcs} | {best['p_center']:.4f} | {best['p_resample']:.4f} | "
                      f"{best['msd_rel_error']:.4f} |")


if __name__ == "__main__":
    main()
