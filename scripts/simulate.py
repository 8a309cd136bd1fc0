"""Simulate a model and save its output.

    python scripts/simulate.py si --beta 0.3 --out frames.npz [--png preview.png]
    python scripts/simulate.py mk --size 512 --steps 50000 --png fig_s1.png [--gif run.gif] [--npz pattern.npz]

``si`` writes ``frames`` (uint8 0/1, shape (sequences, frames, size, size)), the format that
``data.path=FILE.npz`` reads, from one aware site in the centre of each lattice.

``mk`` runs the Malevanets-Kapral model (reference parameters unless given) from the uniform state
with a central stripe (``--initial stripe``; ``uniform`` without it; or a ``.npz`` pattern) with a
progress bar, and saves species A as a PNG titled with its pattern score (optionally a GIF of A every
``--gif-every`` steps, and the final state as ``pattern`` in an ``.npz`` that ``data.path`` reads).
``--lattices L`` runs L independent lattices at once, shows them side by side and counts the patterned
ones (the GIF and ``.npz`` show the first).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from slm.errors import InputError
from slm.models.malevanets_kapral import REFERENCE
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


def simulate_mk_command(args: argparse.Namespace) -> None:
    from datamodules.patterns import load_pattern
    from slm.models import MalevanetsKapral, uniform_state
    from slm.stats import is_patterned, pattern_score
    from slm.tasks.stability import save_field

    model = MalevanetsKapral(args.D_A, args.D_B, args.k1, args.k2, args.k3, N=args.N, gamma=args.gamma)
    if args.lattices < 1:
        raise InputError(f"--lattices: expected a positive number of lattices, got {args.lattices}")
    if args.initial in ("stripe", "uniform"):
        x = uniform_state(args.lattices, args.size, args.N, stripe=args.initial == "stripe")
    else:
        x = load_pattern(args.initial, args.N)[:1].expand(args.lattices, -1, -1, -1)
    every = args.gif_every if args.gif else 1000
    x, snapshots = model.simulate(x, args.steps, torch.Generator().manual_seed(args.seed), every, keep=bool(args.gif))
    frames = [Image.fromarray((model.observe(s)[0] * 255).clamp(0, 255).byte().numpy()) for s in snapshots]
    fields = model.observe(x)
    scores = [float(pattern_score(field)) for field in fields]
    patterned = [bool(is_patterned(field)) for field in fields]
    save_field(fields, args.png, [f"A/N after {args.steps} steps, pattern score {score:.3f}" for score in scores])
    verdicts = ", ".join(f"{score:.3f} ({'patterned' if p else 'not patterned'})"
                         for score, p in zip(scores, patterned, strict=True))
    print(f"wrote {args.png}: pattern score {verdicts}")
    if args.lattices > 1:
        print(f"{sum(patterned)} of {args.lattices} lattices patterned, mean score {np.mean(scores):.3f}")
    if args.gif:
        frames[0].save(args.gif, save_all=True, append_images=frames[1:], duration=100, loop=0)
        print(f"wrote {args.gif}: {len(frames)} frames")
    if args.npz:
        np.savez_compressed(args.npz, pattern=x[0].numpy())
        print(f"wrote {args.npz}: pattern {tuple(x[0].shape)}")


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
    mk = models.add_parser("mk", help="Malevanets-Kapral reaction-diffusion")
    for name, value in REFERENCE.items():
        mk.add_argument(f"--{name}", type=float, default=value)
    mk.add_argument("--N", type=int, default=50)
    mk.add_argument("--gamma", type=float, default=0.005)
    mk.add_argument("--size", type=int, default=64)
    mk.add_argument("--steps", type=int, default=20000)
    mk.add_argument("--initial", default="stripe", help="stripe | uniform | a .npz with 'pattern'")
    mk.add_argument("--seed", type=int, default=0)
    mk.add_argument("--lattices", type=int, default=1, help="independent lattices simulated side by side")
    mk.add_argument("--png", type=Path, required=True, help="image of species A")
    mk.add_argument("--gif", type=Path, help="also save an animation of A")
    mk.add_argument("--gif-every", type=int, default=1000, help="steps between GIF frames")
    mk.add_argument("--npz", type=Path, help="also save the final state (data.path format)")
    mk.set_defaults(run=simulate_mk_command)
    args = parser.parse_args(argv)
    try:
        args.run(args)
    except InputError as err:
        sys.exit(f"error: {err}")


if __name__ == "__main__":
    main()
