"""Diagnose the CPM's gradients across T: the command line of :mod:`slm.studies.cpm_gradients`.

    python scripts/cpm_gradients.py --out docs/cpm_gradients.json --plot docs/cpm_gradients.png
"""

from __future__ import annotations

import argparse
import json
import math
from functools import partial
from pathlib import Path

from slm.config import ArgumentParser
from slm.studies import cpm_gradients


def main(argv: list[str] | None = None) -> None:
    parser = ArgumentParser(description=cpm_gradients.__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cells", type=int, default=4000, help="cells per gradient estimate")
    parser.add_argument("--repeats", type=int, default=5, help="independent estimates per point")
    parser.add_argument("--step", type=float, default=0.05, help="relative finite-difference step in T")
    parser.add_argument("--targets", type=float, nargs="*", default=[2.0, 3.0, 4.0],
                        help="target MSDs whose exact temperature to print")
    parser.add_argument("--out", type=Path, default=Path("cpm_gradients.json"))
    parser.add_argument("--plot", type=Path, default=Path("cpm_gradients.png"))
    args = parser.parse_args(argv)
    optima = {}
    for target in args.targets:
        temperature = cpm_gradients.exact_temperature(target)
        optima[str(target)] = {"temperature": temperature, "acceptance": math.exp(-1 / temperature)}
        print(f"target MSD {target}: exact T = {temperature:.4f}, acceptance = {math.exp(-1 / temperature):.4f}")
    rows = cpm_gradients.study(args.cells, args.repeats, args.step, progress=partial(print, flush=True))
    args.out.write_text(json.dumps({"optima": optima, "gradients": rows}, indent=2) + "\n")
    cpm_gradients.plot(rows, args.plot)
    print(f"wrote {args.out} and {args.plot}")


if __name__ == "__main__":
    main()
