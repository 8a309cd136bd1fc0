"""Check the multi-cell CPM's gradient estimators against finite differences (``slm.studies.potts_gradients``).

    python scripts/potts_gradients.py --out docs/potts_gradients.json --plot docs/potts_gradients.png
"""

from __future__ import annotations

import argparse
import json
from functools import partial
from pathlib import Path

from slm.studies import potts_gradients


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=potts_gradients.__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lattices", type=int, default=4, help="lattices per gradient estimate")
    parser.add_argument("--size", type=int, default=48, help="lattice side")
    parser.add_argument("--cells", type=int, default=40, help="cells per lattice (25 sites each)")
    parser.add_argument("--mcs", type=int, default=30, help="MCS from the random mixture to the statistics")
    parser.add_argument("--repeats", type=int, default=8, help="independent estimates per point")
    parser.add_argument("--step", type=float, default=0.1, help="relative finite-difference step")
    parser.add_argument("--out", type=Path, default=Path("potts_gradients.json"))
    parser.add_argument("--plot", type=Path, default=Path("potts_gradients.png"))
    args = parser.parse_args(argv)
    rows = potts_gradients.study(args.lattices, args.size, args.cells, args.mcs, args.repeats, args.step,
                                 progress=partial(print, flush=True))
    verdicts = potts_gradients.verdicts(rows)
    for label, verdict in verdicts.items():
        print(f"{label}: same sign as {verdict['same_sign']} of {verdict['resolved']} resolved finite differences, "
              f"median ratio {verdict['median_ratio']:.3g}")
    args.out.write_text(json.dumps({"settings": vars(args) | {"out": str(args.out), "plot": str(args.plot)},
                                    "verdicts": verdicts, "gradients": rows}, indent=2) + "\n")
    potts_gradients.plot(rows, args.plot)
    print(f"wrote {args.out} and {args.plot}")


if __name__ == "__main__":
    main()
