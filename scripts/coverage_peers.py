"""ABC-SMC's and NPE's 90% intervals on the truths of a coverage study, beside AD's (slm/studies/peers.py).

    python scripts/coverage_peers.py logs/coverage/prw_synthetic/<time> --count 100 --budget ad --out peers.jsonl
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from slm.config import ArgumentParser


def main() -> None:
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep", type=Path, help="a coverage multirun folder (scripts/train.py -m ... coverage=...)")
    parser.add_argument("--methods", nargs="+", default=["abc", "npe"], choices=["abc", "npe"])
    parser.add_argument("--budget", default="ad", choices=["ad", "own"],
                        help="ad: the wall clock of AD's fit plus uncertainty on that truth; own: converged")
    parser.add_argument("--count", type=int, default=100, help="the first COUNT jobs of the sweep")
    parser.add_argument("--procs", type=int, default=2, help="ABC-SMC's processes")
    parser.add_argument("--out", type=Path, required=True, help="rows as JSON lines (appended as they finish)")
    args = parser.parse_args()
    if not args.sweep.is_dir():
        raise SystemExit(f"error: sweep: not a folder: {args.sweep}")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from slm.studies.peers import compare  # after the arguments: pyabc and sbi take seconds to import

    summary = compare(args.sweep, tuple(args.methods), args.budget, args.count, args.procs, args.out)
    print(json.dumps(summary, indent=2))
    args.out.with_suffix(".summary.json").write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
