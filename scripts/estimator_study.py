"""Bias and variance of each gradient estimator on SI: the command line of :mod:`slm.studies.estimator_study`.

    python scripts/estimator_study.py --out docs/estimator_study.json --plot docs/estimator_study.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from slm.config import ArgumentParser
from slm.studies import estimator_study


def main(argv: list[str] | None = None) -> None:
    parser = ArgumentParser(description=estimator_study.__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--beta-true", type=float, default=0.4)
    parser.add_argument("--betas", type=float, nargs="*", default=[0.2, 0.4, 0.6])
    parser.add_argument("--repeats", type=int, default=500)
    parser.add_argument("--batch", type=int, default=32, help="lattices (64x64) per gradient")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("estimator_study.json"))
    parser.add_argument("--plot", type=Path, default=Path("estimator_study.png"))
    args = parser.parse_args(argv)
    summary = estimator_study.study(args.beta_true, args.betas, args.repeats, args.batch, args.seed, progress=print)
    args.out.write_text(json.dumps(summary, indent=2) + "\n")
    estimator_study.plot(summary, args.plot)
    print(f"wrote {args.out} and {args.plot}")


if __name__ == "__main__":
    main()
