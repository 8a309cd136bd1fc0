"""Every experiment's default run: steps, seconds, converged (:mod:`slm.studies.run_lengths`).

    python scripts/run_lengths.py --out docs/run_lengths.json                 # every experiment
    python scripts/run_lengths.py --only si_transition cpm_sorting            # some
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from slm.config import ArgumentParser
from slm.studies.run_lengths import experiments, markdown, run


def main() -> None:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", choices=experiments(), help="these experiments only")
    parser.add_argument("--out", type=Path, help="write the rows as JSON")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds one run may take")
    parser.add_argument("overrides", nargs="*", help="key=value for every run, e.g. stopping.stop=false")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for name in args.only or experiments():
            rows.append(run(name, Path(folder) / name, args.overrides, args.timeout))
            print(json.dumps(rows[-1]), flush=True)
            if args.out:
                args.out.write_text(json.dumps(rows, indent=2) + "\n")
    print(markdown(rows))


if __name__ == "__main__":
    main()
