"""Simulate a model as its config defines it, with Hydra overrides, and print (and optionally save) the result.

    python scripts/simulate.py si truth.beta=0.3 data.n_sequences=100 --npz frames.npz [--png preview.png]
    python scripts/simulate.py mk --size 512 --steps 50000 --png fig_s1.png [--gif run.gif] [--npz pattern.npz]
    python scripts/simulate.py potts model.temperature=12 --steps 1000 [--png cells.png --gif run.gif --npz cells.npz]
    python scripts/simulate.py act model.surface_target=150 --lattices 16 [--png cells.png --gif cell.gif]
    python scripts/simulate.py potts3d --png sorting3d.png      # CompuCell3D's cellsort_3D on 64^3
    python scripts/simulate.py act3d --png cell3d.png           # Artistoo's 3D act cell on 48^3 (--size DxHxW)

The model is ``configs/model/<name>.yaml`` composed as ``scripts/train.py`` composes it (with ``data=si``
for ``si``, ``truth=mk`` for ``mk``, ``data=tracks`` for ``act``), so every default is the config's; any
``key=value`` overrides it. See :mod:`slm.simulation` for what each model prints and writes.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from slm.config import ArgumentParser
from slm.errors import InputError
from slm.simulation import GROUPS, Options, simulate


def main(argv: list[str] | None = None) -> None:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", choices=list(GROUPS))
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. model.temperature=12 truth.beta=0.3")
    parser.add_argument("--steps", type=int,
                        help="steps (MCS) to run (mk: 20000, potts, potts3d: 1000; act: data.frames)")
    parser.add_argument("--lattices", type=int, help="independent lattices simulated at once (act: 16, else 1)")
    parser.add_argument("--size", help="lattice side S, or HxW (mk, potts, act), or DxHxW (a 3D torus: potts, act)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--init", type=Path, help="start from a .npz: MK 'pattern', CPM 'labels' and 'cell_types'")
    parser.add_argument("--png", type=Path, help="save a picture of the final lattices")
    parser.add_argument("--gif", type=Path, help="save an animation of the first lattice")
    parser.add_argument("--gif-every", type=int, help="steps between GIF frames (mk: 1000, potts: 10)")
    parser.add_argument("--npz", type=Path, help="save the result (the formats data.path reads)")
    parser.add_argument("--scale", type=int, default=4, help="image pixels per site")
    args = parser.parse_intermixed_args(argv)
    options = Options(args.steps, args.lattices, args.size, args.seed, args.init, args.png, args.gif, args.gif_every,
                      args.npz, args.scale)
    try:
        for line in simulate(args.model, args.overrides, options):
            print(line)
    except InputError as err:
        sys.exit(f"error: {err}")


if __name__ == "__main__":
    main()
