"""Check the multi-cell CPM's gradient estimators against finite differences (``slm.studies.potts_gradients``).

    python scripts/potts_gradients.py --out docs/potts_gradients.json --plot docs/potts_gradients.png
    python scripts/potts_gradients.py --setting act --repeats 3 --out docs/act_gradients.json \
        --plot docs/act_gradients.png
"""

from __future__ import annotations

import argparse
import json
from functools import partial
from pathlib import Path

from slm.config import ArgumentParser
from slm.studies import potts_gradients


def main(argv: list[str] | None = None) -> None:
    parser = ArgumentParser(description=potts_gradients.__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--setting", choices=list(potts_gradients.SETTINGS), default="sorting",
                        help="sorting (cell sorting) or act (migrating cells, the T-cell fit)")
    parser.add_argument("--lattices", type=int, help="lattices per gradient estimate (sorting 4, act 16)")
    parser.add_argument("--size", type=int, help="lattice side (sorting 48, act 40)")
    parser.add_argument("--cells", type=int, default=40, help="sorting: cells per lattice (25 sites each)")
    parser.add_argument("--mcs", type=int, default=30, help="sorting: MCS from the random mixture to the statistics")
    parser.add_argument("--repeats", type=int, default=8, help="independent estimates per point")
    parser.add_argument("--step", type=float, default=0.1, help="relative finite-difference step")
    parser.add_argument("--out", type=Path, default=Path("potts_gradients.json"))
    parser.add_argument("--plot", type=Path, default=Path("potts_gradients.png"))
    args = parser.parse_args(argv)
    sizes = {key: value for key, value in (("lattices", args.lattices), ("size", args.size)) if value is not None}
    if args.setting == "sorting":
        setting = potts_gradients.sorting(cells=args.cells, mcs=args.mcs, **sizes)
    else:
        setting = potts_gradients.act(**sizes)
    rows = potts_gradients.study(setting, args.repeats, args.step, progress=partial(print, flush=True))
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
