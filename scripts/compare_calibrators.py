"""Approximate gradients (AD) against ABC-SMC and CMA-ES: the command line of :mod:`slm.studies.calibrators`.

    python scripts/compare_calibrators.py --quick --out compare.json      # <= 15 min on 2 cores
    python scripts/compare_calibrators.py --out compare.json              # the papers' data sizes
    python scripts/compare_calibrators.py --quick --dims 1,16,256 --out scaling.json   # the scaling study
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from slm.config import ArgumentParser
from slm.errors import InputError

BASELINES = ("pyabc", "cma", "sbi")


def main(argv: list[str] | None = None) -> None:
    try:
        from slm.studies import calibrators, scaling
    except ImportError as error:  # the baselines are an optional extra
        if error.name not in BASELINES:
            raise
        sys.exit(f"error: {error.name} is not installed; the comparison needs pip install -e '.[baselines]'")
    parser = ArgumentParser(description=calibrators.__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small data and budgets (<= 15 min on 2 cores)")
    parser.add_argument("--tasks", nargs="*", default=["si", "prw"], choices=calibrators.TASKS,
                        help="potts (cell sorting, ~30 min with --quick) and tcells / tcells_mixture (act model on "
                             "T cells, one or two classes) only when named")
    parser.add_argument("--dims", type=_sizes, default=None,
                        help="the scaling study instead: SI spread fields of these numbers of blocks, e.g. 1,16,256")
    parser.add_argument("--classes", type=_sizes, default=None,
                        help="the scaling study (also): PRW mixtures of these numbers of classes, e.g. 1,2,4")
    parser.add_argument("--procs", type=int, default=2, help="ABC-SMC worker processes")
    parser.add_argument("--out", type=Path, default=Path("compare_calibrators.json"))
    parser.add_argument("--plot", type=Path, default=None, help="error vs time figure (default: OUT with .png)")
    args = parser.parse_args(argv)
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("[%(name)s] %(message)s"))
    logging.getLogger("slm").addHandler(handler)
    logging.getLogger("slm").setLevel(logging.INFO)
    plot = args.plot or args.out.with_suffix(".png")
    if args.dims is not None or args.classes is not None:
        try:
            rows = scaling.run_scaling(args.quick, args.dims or [], args.classes or [], args.procs, args.out,
                                           plot)
        except InputError as error:
            sys.exit(f"error: {error}")
        print("| study | d | method | seconds | simulations | error (RMSE to truth, or loss) | s to AD's error | "
              "x AD |")
        print("|---|---|---|---|---|---|---|---|")
        for row in rows:
            reached = row.get("time_to_ad_error")
            time = "-" if "time_to_ad_error" not in row else "not reached" if reached is None else f"{reached:.1f}"
            print(f"| {row['task']} | {row['dims']} | {row['method']} | {row['seconds']:.1f} | {row['simulations']} | "
                  f"{row.get('param_error', row.get('loss')):.4g} | {time} | {row.get('times_ad') or ''} |")
        print(f"wrote {args.out} and {plot}")
        return
    rows = calibrators.run_comparison(args.quick, args.tasks, args.procs, args.out, plot)
    print("| task | method | seconds | simulations | param error (or loss) | estimate | "
          "x AD time at equal error |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        estimate = ", ".join(f"{k} {v:.4f}" for k, v in row["estimate"].items())
        ratio = row.get("ratio_to_AD_at_equal_error")
        error = row.get("param_error", row.get("loss"))
        print(f"| {row['task']} | {row['method']} | {row['seconds']:.1f} | {row['simulations']} | {error:.4f} | "
              f"{estimate} | {'' if ratio is None else f'{ratio:.2f}'} |")
    print(f"wrote {args.out} and {plot}")


def _sizes(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers separated by commas, e.g. 1,16,256; got {text!r}") from None


if __name__ == "__main__":
    main()
