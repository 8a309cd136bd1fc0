"""Simulate a model as configured for training, and write what a user asks for (``scripts/simulate.py``).

A model is composed from its config, ``configs/model/<name>.yaml``, with the groups its experiments use
(:data:`GROUPS`) and the user's Hydra overrides (``model.temperature=12``, ``truth.beta=0.3``,
``data.frames=20``): the same composition as ``scripts/train.py``, so the defaults have one source. Every
run prints its numbers; a PNG, a GIF and an ``.npz`` are each optional.

* ``si``: the reference frames of the SI data module (``data=si``, ``truth.beta``): ``frames`` uint8
  ``(sequences, frames, H, W)`` in the ``.npz``, the format ``data.path`` reads.
* ``mk``: the Malevanets-Kapral model (``truth=mk``: the reference parameters) from the uniform state with a
  central stripe (or ``--init`` a ``.npz`` pattern); the pattern score of every lattice; the ``.npz`` holds the
  first lattice's ``pattern``.
* ``potts``: the multi-cell CPM (cellsort by default) from ``model.cells`` square cells (or ``--init`` a
  ``.npz`` of ``labels`` and ``cell_types``); copy attempts per second and the summary statistics; the ``.npz``
  holds ``labels (B, H, W)`` and ``cell_types``.
* ``act``: migrating cells (``data=tracks``: burn-in, frames, lags, units); the track statistics the fit uses.

``potts3d`` and ``act3d`` are the same models with 3D settings (``configs/model/potts3d.yaml``: CompuCell3D's
cellsort_3D on 64^3; ``act3d.yaml``: Artistoo's 3D act cell on 48^3). ``--size DxHxW`` runs any CPM on a 3D torus
(cubic cells; ``dims = 3`` in the ``.npz``); their
pictures are then each lattice's mid-plane slices over its per-type maximum projections
(:func:`slm.plots.volume_cells_rgb`), and the act model's the projections and slices of its activity
(:func:`slm.plots.lattice_image`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException
from PIL import Image

from slm.config import build, compose_config
from slm.errors import InputError
from slm.io import load_labels, load_pattern
from slm.models.malevanets_kapral import uniform_state
from slm.plots import cells_rgb, lattice_image, save_field, save_gif, save_png
from slm.stats import is_patterned, pattern_score, track_statistic_names, track_statistics

#: The config groups composed with each model (its experiments' data and ground truth).
GROUPS = {"si": ["data=si"], "mk": ["truth=mk"], "potts": [], "potts3d": [], "act": ["data=tracks", "truth=act"],
          "act3d": ["data=tracks", "truth=act"]}
#: Steps run when ``--steps`` is not given (MK steps, CPM Monte Carlo steps), steps between GIF frames, lattices.
STEPS = {"mk": 20000, "potts": 1000, "potts3d": 1000}
GIF_EVERY = {"mk": 1000, "potts": 10, "potts3d": 10}
LATTICES = {"act": 16, "act3d": 4}
#: Lattice sides when ``--size`` is not given (act: the data config's; act3d: a 48^3 torus).
SIZES = {"mk": 64, "potts": 100, "potts3d": [64, 64, 64], "act3d": [48, 48, 48]}


@dataclass
class Options:
    """What to run and write: ``steps`` (default :data:`STEPS`), ``lattices`` (default :data:`LATTICES`, else 1),
    lattice ``size`` (default: :data:`SIZES`, else the data config's), ``seed``, ``init`` (a
    starting file), and the optional outputs ``png``, ``gif`` (a frame every ``gif_every`` steps, default
    :data:`GIF_EVERY`), ``npz``; ``scale``: image pixels per site. ``lines``: what the run printed."""

    steps: int | None = None
    lattices: int | None = None
    size: str | None = None
    seed: int = 0
    init: Path | None = None
    png: Path | None = None
    gif: Path | None = None
    gif_every: int | None = None
    npz: Path | None = None
    scale: int = 4
    lines: list[str] = field(default_factory=list)


def compose(name: str, overrides: list[str]) -> DictConfig:
    """The config of model ``name`` with :data:`GROUPS` and ``overrides``; one-line errors."""
    if name not in GROUPS:
        raise InputError(f"model: expected one of {', '.join(GROUPS)}, got {name!r}")
    parser = OverridesParser.create()
    for override in overrides:
        try:
            parser.parse_override(override)
        except HydraException as err:
            raise InputError(f"{override.split('=')[0]}: cannot parse {override!r} ({err})") from None
    try:
        return compose_config("~experiment", f"model={name}", *GROUPS[name], *overrides)
    except HydraException as err:
        raise InputError(str(err).strip().splitlines()[0]) from None


def simulate(name: str, overrides: list[str], options: Options) -> list[str]:
    """Run model ``name`` (see the module docstring) and write the requested files; returns the lines to print."""
    for key in ("steps", "lattices", "gif_every", "scale"):
        value = getattr(options, key)
        if value is not None and not (isinstance(value, int) and value >= 1):
            raise InputError(f"--{key.replace('_', '-')}: expected a positive integer, got {value}")
    cfg = compose(name, overrides)
    options.lattices = options.lattices or LATTICES.get(name, 1)
    options.gif_every = options.gif_every or GIF_EVERY.get(name, 1)
    try:
        RUNNERS[name](cfg, options, name)
    except OmegaConfBaseException as err:  # an override that does not fit the config
        raise InputError(str(err).strip().splitlines()[0]) from None
    return options.lines


def _wrote(options: Options, path: Path | None, what: str) -> None:
    if path is not None:
        options.lines.append(f"wrote {path}: {what}")


def _size(options: Options, default: int | list[int], volumes: bool = False) -> tuple[int, ...]:
    """The lattice's sides from ``--size`` (``S``, ``HxW`` or, where ``volumes``, ``DxHxW``), else ``default``."""
    text = options.size or "x".join(map(str, [default] if isinstance(default, int) else default))
    try:
        sides = [int(side) for side in text.lower().split("x")]
    except ValueError:
        sides = []
    sides = sides * 2 if len(sides) == 1 else sides
    if len(sides) not in ((2, 3) if volumes else (2,)) or min(sides) < 4 or any(side % 2 for side in sides):
        shapes = "S, HxW or DxHxW" if volumes else "S or HxW"
        raise InputError(f"--size: expected {shapes} with even sides >= 4, got {text!r}")
    return tuple(sides)


def _timed(run: Callable[[], object], options: Options, attempts: int) -> object:
    start = time.perf_counter()
    with torch.no_grad():
        out = run()
    seconds = max(time.perf_counter() - start, 1e-9)
    options.lines.append(f"{attempts:,} copy attempts in {seconds:.2f} s: {attempts / seconds:.3g} copy attempts/s")
    return out


def run_si(cfg: DictConfig, options: Options, name: str) -> None:
    data = build(cfg.data)
    data.setup("fit")
    frames = data.frames.numpy()
    options.lines.append(
        f"{frames.shape[0]} SI sequences of {frames.shape[1]} frames of {frames.shape[2]}x"
        f"{frames.shape[3]}, beta {cfg.truth.beta}, final aware fraction {frames[:, -1].mean():.3f}"
    )
    if options.npz:
        np.savez_compressed(options.npz, frames=frames)
    _wrote(options, options.npz, f"frames {frames.shape} uint8")
    if options.png:
        every = max(1, frames.shape[1] // 8)
        strip = np.concatenate([np.pad(f, 1, constant_values=1) for f in frames[0, ::every]], axis=1)
        Image.fromarray(((1 - strip) * 255).astype(np.uint8)).resize(
            (strip.shape[1] * options.scale, strip.shape[0] * options.scale), Image.NEAREST
        ).save(options.png)
    _wrote(options, options.png, f"every {max(1, frames.shape[1] // 8)}th frame of sequence 0 (aware = black)")


def run_mk(cfg: DictConfig, options: Options, name: str) -> None:
    model = build(cfg.model)
    steps = options.steps or STEPS["mk"]
    if options.init is None:
        x = uniform_state(options.lattices, _size(options, SIZES[name]), model.N)
    else:
        x = load_pattern(options.init, model.N, key="--init")[:1].expand(options.lattices, -1, -1, -1)
    # Without a GIF the rollouts still come in chunks of the default GIF spacing, so that a picture does not change
    # the random stream.
    every = options.gif_every
    x, snapshots = model.simulate(x, steps, torch.Generator().manual_seed(options.seed), every, keep=bool(options.gif))
    fields = model.observe(x)
    scores = [float(pattern_score(f)) for f in fields]
    patterned = [bool(is_patterned(f)) for f in fields]
    options.lines.append(
        "pattern score after {} steps: {}".format(
            steps,
            ", ".join(
                f"{s:.3f} ({'patterned' if p else 'not patterned'})" for s, p in zip(scores, patterned, strict=True)
            ),
        )
    )
    if len(fields) > 1:
        options.lines.append(f"{sum(patterned)} of {len(fields)} lattices patterned, mean score {np.mean(scores):.3f}")
    if options.png:
        save_field(fields, options.png, [f"A/N after {steps} steps, pattern score {s:.3f}" for s in scores])
    _wrote(options, options.png, "species A of every lattice")
    if options.gif:
        frames = [
            np.repeat((model.observe(s)[0] * 255).clamp(0, 255).byte().numpy()[..., None], 3, -1) for s in snapshots
        ]
        save_gif(frames, options.gif, 1)
    _wrote(options, options.gif, f"A of lattice 0 every {options.gif_every} steps")
    if options.npz:
        np.savez_compressed(options.npz, pattern=x[0].numpy())
    _wrote(options, options.npz, f"pattern {tuple(x[0].shape)} (data.path format)")


def _cells_start(model: torch.nn.Module, options: Options, size: tuple[int, ...]) -> tuple:
    generator = torch.Generator().manual_seed(options.seed)
    if options.init is None:
        return model.initial_state(options.lattices, size, generator=generator), generator
    labels, cell_types, dims = load_labels(options.init, key="--init")
    # Several lattices (or frames): start from the last one.
    last = torch.from_numpy(labels.reshape(-1, *labels.shape[-dims:])[-1])
    labels = last.repeat(options.lattices, *(1,) * dims)
    table = torch.from_numpy(cell_types.reshape(-1, cell_types.shape[-1])[-1])
    try:
        return model.state(labels, table), generator
    except InputError as err:
        raise InputError(f"--init: {options.init}: {err}") from None


def run_potts(cfg: DictConfig, options: Options, name: str) -> None:
    model = build(cfg.model)
    steps = options.steps or STEPS[name]
    state, generator = _cells_start(model, options, _size(options, SIZES[name], volumes=True))
    every = options.gif_every if options.gif else steps
    state, snapshots = _timed(
        lambda: model.simulate(state, steps, generator, every, keep=bool(options.gif)),
        options,
        state.labels.numel() * steps,
    )
    batch, dims = state.labels.shape[0], state.labels.dim() - 1
    values = zip(model.summary_names, model.summary(state)[0].tolist(), strict=True)
    options.lines.append(f"lattice 0 after {steps} MCS: " + ", ".join(f"{n} {v:.4g}" for n, v in values))
    if options.png:
        save_png(cells_rgb(state.labels, state.cell_types), options.png, options.scale)
    _wrote(options, options.png, f"{batch} lattice(s) after {steps} MCS")
    if options.gif:
        save_gif([cells_rgb(s.labels[:1], s.cell_types[:1])[0] for s in snapshots], options.gif, options.scale)
    _wrote(options, options.gif, f"lattice 0 every {options.gif_every} MCS")
    if options.npz:
        types = state.cell_types if (state.cell_types != state.cell_types[:1]).any() else state.cell_types[0]
        np.savez_compressed(options.npz, labels=state.labels.numpy().astype(np.int32),
                            cell_types=types.numpy().astype(np.int32), dims=dims)
    _wrote(options, options.npz, f"labels {tuple(state.labels.shape)} int32, their cell_types and dims={dims}")


def run_act(cfg: DictConfig, options: Options, name: str) -> None:
    model, data = build(cfg.model), build(cfg.data)
    mcs_per_frame = data.mcs_per_frame_of(data.frame_interval)
    state, generator = _cells_start(model, options, _size(options, SIZES.get(name, list(data.size)), volumes=True))
    batch, dims = state.labels.shape[0], state.labels.dim() - 1
    mcs = data.burn_in + data.frames * mcs_per_frame

    def run() -> tuple:
        with torch.no_grad():
            start = model.rollout(state, data.burn_in, generator)
        return model.rollout(
            start,
            data.frames * mcs_per_frame,
            generator,
            record_every=mcs_per_frame,
            record=lambda s: (model.positions(s), model.observe(s)),
        )

    final, (positions, images) = _timed(run, options, state.labels.numel() * mcs)
    tracks = positions.transpose(1, 2).flatten(0, 1) * data.um_per_site
    values = dict(zip(track_statistic_names(data.lags), track_statistics(tracks, data.lags).tolist(), strict=True))
    seconds = mcs_per_frame * data.seconds_per_mcs
    options.lines.append(
        f"{len(tracks)} tracks of {data.frames + 1} frames ({seconds:g} s apart, {data.um_per_site:g} um per site): "
        f"speed {values['speed'] * 60 / seconds:.3g} um/min, persistence {values['persistence']:.3g}, MSD (um^2) "
        + " ".join(f"{values[f'msd_{k}']:.4g}" for k in range(1, data.lags + 1))
    )
    if dims == 3:
        images = torch.stack([torch.stack([lattice_image(frame) for frame in lattice]) for lattice in images])
    grey = (images * 255).round().to(torch.uint8)[..., None].expand(*images.shape, 3).numpy()
    if options.png:
        save_png(grey[:, -1], options.png, options.scale)
    _wrote(options, options.png, f"{batch} lattice(s), cells shaded by activity")
    if options.gif:
        save_gif(list(grey[0]), options.gif, options.scale)
    _wrote(options, options.gif, "lattice 0 at every frame")
    if options.npz:
        np.savez_compressed(
            options.npz,
            labels=final.labels.numpy().astype(np.int32),
            cell_types=final.cell_types[0].numpy().astype(np.int32),
            dims=dims,
            tracks_um=tracks.numpy(),
        )
    _wrote(options, options.npz, "final labels, cell_types and the tracks (um)")


RUNNERS: dict[str, Callable[[DictConfig, Options, str], None]] = {
    "si": run_si,
    "mk": run_mk,
    "potts": run_potts,
    "potts3d": run_potts,
    "act": run_act,
    "act3d": run_act,
}
