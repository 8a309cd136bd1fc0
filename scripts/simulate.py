"""Simulate a model and save its output.

    python scripts/simulate.py si --beta 0.3 --out frames.npz [--png preview.png]

``si`` writes ``frames`` (uint8 0/1, shape (sequences, frames, size, size)), the format that
``data.path=FILE.npz`` reads, from one aware site in the centre of each lattice.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from slm.errors import InputError
from slm.models.si import simulate_si


def simulate_si_command(args: argparse.Namespace) -> None:
    generator = torch.Generator().manual_seed(args.seed)
    frames = simulate_si(args.beta, args.sequences, args.frames, size=(args.size, args.size), beta_sd=args.beta_sd,
                         generator=generator).numpy()
    np.savez_compressed(args.out, frames=frames)
    print(f"wrote {args.out}: frames {frames.shape} uint8")
    if args.png:
        shown = frames[0, :: max(1, args.frames // 8)]
        strip = np.concatenate([np.pad(f, 1, constant_values=1) for f in shown], axis=1)
        Image.fromarray(((1 - strip) * 255).astype(np.uint8)).resize(
            (strip.shape[1] * 4, strip.shape[0] * 4), Image.NEAREST).save(args.png)
        print(f"wrote {args.png}: every {max(1, args.frames // 8)}th frame of sequence 0 (aware = black)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    models = parser.add_subparsers(dest="model", required=True)
    si = models.add_parser("si", help="susceptible-infected sequences")
    si.add_argument("--beta", type=float, required=True, help="spread coefficient in (0, 1)")
    si.add_argument("--beta-sd", type=float, default=0.0, help="redraw beta_t ~ N(beta, sd) every step")
    si.add_argument("--sequences", type=int, default=100)
    si.add_argument("--frames", type=int, default=50, help="frames per sequence, the initial one included")
    si.add_argument("--size", type=int, default=64)
    si.add_argument("--seed", type=int, default=0)
    si.add_argument("--out", type=Path, required=True, help="output .npz")
    si.add_argument("--png", type=Path, help="also save a preview strip")
    si.set_defaults(run=simulate_si_command)
    args = parser.parse_args(argv)
    try:
        args.run(args)
    except InputError as err:
        sys.exit(f"error: {err}")


if __name__ == "__main__":
    main()
