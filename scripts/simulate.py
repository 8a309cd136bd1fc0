"""Simulate a model and save its output.

    python scripts/simulate.py si --beta 0.3 --out frames.npz [--png preview.png]
    python scripts/simulate.py mk --size 512 --steps 50000 --png fig_s1.png [--gif run.gif] [--npz pattern.npz]
    python scripts/simulate.py potts --mcs 1000 --png cells.png [--gif run.gif --gif-every 10] [--npz cells.npz]
    python scripts/simulate.py act --png cells.png [--gif run.gif] [--surface-target 160 --lambda-act 250 ...]

``si`` writes ``frames`` (uint8 0/1, shape (sequences, frames, size, size)), the format that
``data.path=FILE.npz`` reads, from one aware site in the centre of each lattice.

``mk`` runs the Malevanets-Kapral model (reference parameters unless given) from the uniform state
with a central stripe (``--initial stripe``; ``uniform`` without it; or a ``.npz`` pattern) with a
progress bar, and saves species A as a PNG titled with its pattern score (optionally a GIF of A every
``--gif-every`` steps, and the final state as ``pattern`` in an ``.npz`` that ``data.path`` reads).
``--lattices L`` runs L independent lattices at once, shows them side by side and counts the patterned
ones (the GIF and ``.npz`` show the first).

``potts`` runs the multi-cell Cellular Potts model (``slm.models.CellularPotts``; the contact matrix
defaults to CompuCell3D's cellsort example and sets the number of cell types) for ``--mcs`` Monte Carlo
steps on ``--lattices`` lattices from ``--cells`` square cells of ``--volume`` sites (or, with ``--init
FILE.npz``, from its ``labels (H, W)`` and ``cell_types (C,)``, which override ``--size`` and ``--cells``).
It saves the lattices side by side as a PNG (cells coloured by type, medium white, boundaries dark),
optionally a GIF of the first every ``--gif-every`` MCS and an ``.npz`` with ``labels (B, H, W)`` int32 and
``cell_types`` (``(C,)``, or ``(B, C)`` if the lattices differ), and prints the copy attempts per second and
the summary statistics of the first lattice.

``act`` runs migrating cells (``slm.models.ActPotts``, the act model; defaults: ``experiment=cpm_tcells``'s
setting) on ``--lattices`` lattices: ``--burn-in`` MCS, then ``--frames`` frames ``--mcs-per-frame`` MCS
apart. It saves the final lattices (cells shaded by activity) as a PNG, optionally a GIF of the first
lattice at every frame, and prints the track statistics that the fit uses: speed (um/min), persistence and
the MSD (um^2) at lags ``1..--lags``, with ``--um-per-site`` and ``--seconds-per-mcs``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
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


POTTS_OPTIONS = {"model.contact": "--contact", "model.temperature": "--temperature", "model.cells": "--cells",
                 "model.lambda_volume": "--lambda-volume", "model.volume_target": "--volume"}


def simulate_potts_command(args: argparse.Namespace) -> None:
    from slm.models import CellularPotts
    from slm.render import cells_rgb, load_cells, save_gif, save_png

    for name in ("cells", "mcs", "lattices", "gif_every", "scale"):
        if getattr(args, name) < 1:
            raise InputError(f"--{name.replace('_', '-')}: expected a positive integer, got {getattr(args, name)}")
    try:
        contact = json.loads(args.contact)
    except json.JSONDecodeError as err:
        raise InputError(f"--contact: not valid JSON ({err}): {args.contact!r}") from None
    try:
        model = CellularPotts(contact, volume_target=args.volume, lambda_volume=args.lambda_volume,
                              temperature=args.temperature, cells=args.cells)
        generator = torch.Generator().manual_seed(args.seed)
        if args.init is None:
            if min(args.size) < 4 or any(side % 2 for side in args.size):
                raise InputError(f"--size: expected even sides >= 4, got {args.size[0]} {args.size[1]}")
            state = model.initial_state(args.lattices, tuple(args.size), generator=generator)
    except InputError as err:
        key, _, rest = str(err).partition(":")
        raise InputError(f"{POTTS_OPTIONS.get(key, key)}:{rest}") from None
    if args.init is not None:
        labels, cell_types = load_cells(args.init)
        try:
            state = model.state(labels.repeat(args.lattices, 1, 1), cell_types)
        except InputError as err:
            raise InputError(f"{args.init}: {err}") from None
    batch, height, width = state[0].shape
    initial = state
    start = time.perf_counter()
    state, snapshots = model.simulate(state, args.mcs, generator, args.gif_every if args.gif else args.mcs,
                                      keep=bool(args.gif))
    seconds = max(time.perf_counter() - start, 1e-9)
    print(f"{args.mcs} MCS of {batch} lattice(s) of {height}x{width} in {seconds:.2f} s: "
          f"{batch * height * width * args.mcs / seconds:.3g} copy attempts/s")
    save_png(cells_rgb(state[0], state[1]), args.png, args.scale)
    print(f"wrote {args.png}: {batch} lattice(s) after {args.mcs} MCS")
    if args.gif:
        frames = [cells_rgb(s[0][:1], s[1][:1])[0] for s in [initial, *snapshots]]
        save_gif(frames, args.gif, args.scale)
        print(f"wrote {args.gif}: lattice 0, {len(frames)} frames (the start, then every {args.gif_every} MCS)")
    if args.npz:
        types = state[1] if (state[1] != state[1][:1]).any() else state[1][0]
        np.savez_compressed(args.npz, labels=state[0].numpy().astype(np.int32),
                            cell_types=types.numpy().astype(np.int32))
        print(f"wrote {args.npz}: labels {tuple(state[0].shape)} int32, cell_types {tuple(types.shape)} int32")
    values = zip(model.summary_names, model.summary(state)[0].tolist(), strict=True)
    print("lattice 0: " + ", ".join(f"{name} {value:.4g}" for name, value in values))


def simulate_act_command(args: argparse.Namespace) -> None:
    from slm.models import ActPotts
    from slm.render import save_gif, save_png
    from slm.stats import track_statistic_names, track_statistics
    from slm.tasks.tracks import simulate_tracks

    for name in ("cells", "lattices", "frames", "mcs_per_frame", "lags", "scale"):
        if getattr(args, name) < 1:
            raise InputError(f"--{name.replace('_', '-')}: expected a positive integer, got {getattr(args, name)}")
    if args.frames <= args.lags:
        raise InputError(f"--frames: expected more frames than --lags ({args.lags}), got {args.frames}")
    try:
        model = ActPotts(lambda_act=args.lambda_act, max_act=args.max_act, volume_target=args.volume,
                         lambda_volume=args.lambda_volume, surface_target=args.surface_target,
                         lambda_surface=args.lambda_surface, temperature=args.temperature, cells=args.cells, learn=[])
        if args.size < 4 or args.size % 2:
            raise InputError(f"--size: expected an even side >= 4, got {args.size}")
        generator = torch.Generator().manual_seed(args.seed)
        state = model.initial_state(args.lattices, args.size, generator=generator)
    except InputError as err:
        key, _, rest = str(err).partition(":")
        raise InputError(f"--{key.removeprefix('model.').replace('_', '-')}:{rest}") from None
    images = []

    def grey(state: tuple) -> np.ndarray:
        values = (model.observe(state) * 255).round().to(torch.uint8).numpy()
        return np.repeat(values[..., None], 3, -1)

    start = time.perf_counter()
    with torch.no_grad():
        tracks, state = simulate_tracks(model, state, args.burn_in, args.frames, args.mcs_per_frame, generator,
                                        on_frame=(lambda s: images.append(grey(s)[0])) if args.gif else None)
    seconds = max(time.perf_counter() - start, 1e-9)
    mcs = args.burn_in + args.frames * args.mcs_per_frame
    print(f"{mcs} MCS of {args.lattices} lattice(s) of {args.size}x{args.size} in {seconds:.2f} s: "
          f"{args.lattices * args.size ** 2 * mcs / seconds:.3g} copy attempts/s")
    save_png(grey(state), args.png, args.scale)
    print(f"wrote {args.png}: {args.lattices} lattice(s), cells shaded by activity")
    if args.gif:
        save_gif(images, args.gif, args.scale)
        print(f"wrote {args.gif}: lattice 0 at every frame")
    statistics = track_statistics(tracks.flatten(0, 1) * args.um_per_site, args.lags)
    frame_seconds = args.mcs_per_frame * args.seconds_per_mcs
    values = dict(zip(track_statistic_names(args.lags), statistics.tolist(), strict=True))
    print(f"{tracks.shape[0] * tracks.shape[1]} tracks of {args.frames + 1} frames ({frame_seconds:g} s apart, "
          f"{args.um_per_site:g} um per site): speed {values['speed'] * 60 / frame_seconds:.3g} um/min, "
          f"persistence {values['persistence']:.3g}, MSD (um^2) "
          + " ".join(f"{values[f'msd_{k}']:.4g}" for k in range(1, args.lags + 1)))


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
    potts = models.add_parser("potts", help="multi-cell Cellular Potts model (cell sorting)")
    potts.add_argument("--size", type=int, nargs=2, default=[100, 100], metavar=("H", "W"))
    potts.add_argument("--cells", type=int, default=200, help="cells placed at the centre")
    potts.add_argument("--volume", type=float, default=25, help="target volume, also the size of placed cells")
    potts.add_argument("--contact", default="[[0,16,16],[16,2,11],[16,11,14]]",
                       help="JSON (K+1)x(K+1) contact energies over the medium and K cell types")
    potts.add_argument("--lambda-volume", type=float, default=2)
    potts.add_argument("--temperature", type=float, default=10)
    potts.add_argument("--mcs", type=int, default=1000, help="Monte Carlo steps to run")
    potts.add_argument("--lattices", type=int, default=1, help="independent lattices simulated side by side")
    potts.add_argument("--seed", type=int, default=0)
    potts.add_argument("--init", type=Path, help="start from this .npz's labels (H, W) and cell_types (C,)")
    potts.add_argument("--png", type=Path, required=True, help="image of the final lattices")
    potts.add_argument("--scale", type=int, default=4, help="image pixels per site")
    potts.add_argument("--gif", type=Path, help="also save an animation of the first lattice")
    potts.add_argument("--gif-every", type=int, default=10, help="MCS between GIF frames")
    potts.add_argument("--npz", type=Path, help="also save the final labels and cell types")
    potts.set_defaults(run=simulate_potts_command)
    act = models.add_parser("act", help="migrating cells: the act model in the CPM, with track statistics")
    for name, value in (("lambda-act", 250.0), ("max-act", 20.0), ("volume", 60.0), ("lambda-volume", 25.0),
                        ("surface-target", 160.0), ("lambda-surface", 1.0), ("temperature", 20.0),
                        ("um-per-site", 1.0), ("seconds-per-mcs", 3.0)):
        act.add_argument(f"--{name}", type=float, default=value)
    act.add_argument("--size", type=int, default=40, help="lattice side")
    act.add_argument("--cells", type=int, default=1, help="cells per lattice, packed at the centre")
    act.add_argument("--lattices", type=int, default=16, help="independent lattices simulated side by side")
    act.add_argument("--burn-in", type=int, default=50, help="MCS before the first frame")
    act.add_argument("--frames", type=int, default=16, help="frames recorded after the first")
    act.add_argument("--mcs-per-frame", type=int, default=8)
    act.add_argument("--lags", type=int, default=10, help="MSD lags (frames)")
    act.add_argument("--seed", type=int, default=0)
    act.add_argument("--png", type=Path, required=True, help="image of the final lattices")
    act.add_argument("--scale", type=int, default=4, help="image pixels per site")
    act.add_argument("--gif", type=Path, help="also save an animation of the first lattice, one image per frame")
    act.set_defaults(run=simulate_act_command)
    args = parser.parse_args(argv)
    try:
        args.run(args)
    except InputError as err:
        sys.exit(f"error: {err}")


if __name__ == "__main__":
    main()
