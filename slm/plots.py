"""Every figure and picture slm writes: fields, curves of fitted statistics against their targets, and
cell lattices.

Matplotlib figures are built on :class:`matplotlib.figure.Figure` (no pyplot state, safe in workers);
lattice pictures are drawn pixel by pixel with Pillow: :func:`cells_rgb` colours every site by the type
of its cell (:data:`PALETTE`; the medium white) and draws cell boundaries dark grey, :func:`save_png`
puts lattices side by side and :func:`save_gif` animates frames, both scaled up without smoothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure
from PIL import Image
from torch import Tensor

#: an image of a field is drawn at least this many pixels high, each block as a square of pixels
FIELD_PIXELS = 128


def save_field(field: Tensor, path: Path, title: str | list[str]) -> None:
    """Save a ``(H, W)`` field in [0, 1], or a row of ``(n, H, W)`` fields with one title each, as a PNG."""
    fields = field.reshape(-1, *field.shape[-2:]).cpu().numpy()
    titles = [title] if isinstance(title, str) else title
    figure = Figure(figsize=(4 * len(fields), 4))
    axes = figure.subplots(1, len(fields), squeeze=False)
    for axis, image, text in zip(axes[0], fields, titles, strict=True):
        axis.imshow(image, vmin=0, vmax=1, cmap="viridis")
        axis.set_title(text, fontsize=9)
        axis.axis("off")
    figure.tight_layout()
    figure.savefig(path, dpi=100)


def field_image(panels: list[np.ndarray]) -> Tensor:
    """Fields ``(by, bx)`` side by side as one gray image in [0, 1] (common scale, NaN black), each block a
    square of pixels, with a one-pixel white gap between panels."""
    stack = np.stack(panels)
    low, high = np.nanmin(stack), np.nanmax(stack)
    scaled = np.nan_to_num((stack - low) / max(high - low, 1e-12), nan=0.0)
    repeat = max(1, FIELD_PIXELS // max(stack.shape[1:]))
    scaled = scaled.repeat(repeat, axis=1).repeat(repeat, axis=2)
    gap = np.ones((scaled.shape[1], 1))
    return torch.from_numpy(np.concatenate([part for p in scaled for part in (p, gap)][:-1], axis=1)).float()


def field_figure(name: str, panels: dict[str, np.ndarray]) -> Figure:
    """The panels of a field on one colour scale, with its colour bar."""
    figure = Figure(figsize=(3.2 * len(panels) + 0.8, 3.2), layout="constrained")
    axes = figure.subplots(1, len(panels), squeeze=False)[0]
    low = min(np.nanmin(p) for p in panels.values())
    high = max(np.nanmax(p) for p in panels.values())
    for axis, (title, values) in zip(axes, panels.items(), strict=True):
        image = axis.imshow(values, vmin=low, vmax=high, cmap="viridis", interpolation="nearest")
        axis.set_title(f"{name}: {title}")
        axis.set_xticks([])
        axis.set_yticks([])
    figure.colorbar(image, ax=list(axes), shrink=0.8)
    return figure


def msd_figure(target: Tensor, simulated: Tensor) -> Figure:
    """MSD against lag (frames), target and simulated ``(lags,)``."""
    figure = Figure(figsize=(4, 3))
    axes = figure.subplots()
    lags = range(1, len(target) + 1)
    axes.plot(lags, target.cpu(), "ko", label="target")
    axes.plot(lags, simulated.cpu(), "-", color="tab:red", label="simulated")
    axes.set_xlabel("lag (frames)")
    axes.set_ylabel("MSD")
    axes.legend()
    figure.tight_layout()
    return figure


def msd_runs_figure(runs: list[tuple[str, dict, dict]]) -> Figure:
    """One panel per run ``(label, msd.json content, results.json content)`` of a statistics fit: the data's
    MSD and the fitted curve, titled with the fitted parameters and the mean relative error."""
    figure = Figure(figsize=(3.6 * len(runs), 3.2), layout="tight")
    axes = figure.subplots(1, len(runs), squeeze=False)
    for axis, (label, curves, results) in zip(axes[0], runs, strict=True):
        scale = curves["frame_interval"] or 1
        time = [lag * scale for lag in curves["lag"]]
        axis.plot(time, curves["target"], "ko", label="data")
        axis.plot(time, curves["fitted"], "-", color="tab:red", label="fitted PRW")
        lists = any(isinstance(v, list) for v in results["params"].values())  # a mixture: one line per parameter
        params = ("\n" if lists else ", ").join(f"{k}=" + "/".join(f"{x:.3f}" for x in (v if lists and
                                                 isinstance(v, list) else [v])) for k, v in results["params"].items())
        axis.set_title(f"{label}\n{params}\nmean rel. error {results['metrics']['msd_rel_error']:.3f}", fontsize=9)
        axis.set_xlabel("lag (s)" if curves["frame_interval"] else "lag (frames)")
        axis.set_ylabel("MSD")
        axis.legend(fontsize=8)
    return figure


def tracks_figure(lag_minutes: np.ndarray, target: Tensor, fitted: Tensor, examples: np.ndarray | None = None,
                  tracks: np.ndarray | None = None) -> Figure:
    """MSD (um^2) against lag (min) of data and model from physical track statistics ``(K + 2,)`` (MSDs, speed,
    persistence); with ``examples`` and ``tracks`` ``(N, T, 2)`` (um, NaN in gaps) also example tracks of the
    data and the model from a common origin."""
    target, fitted = target.cpu(), fitted.cpu()
    panels = 1 if tracks is None else 3
    figure = Figure(figsize=(4 * panels, 3.4), layout="tight")
    axes = figure.subplots(1, panels, squeeze=False)[0]
    axes[0].plot(lag_minutes, target[:-2], "ko", label=f"data: {target[-2]:.2f} um/min, p {target[-1]:.2f}")
    axes[0].plot(lag_minutes, fitted[:-2], "-", color="tab:red",
                 label=f"model: {fitted[-2]:.2f} um/min, p {fitted[-1]:.2f}")
    axes[0].set_xlabel("lag (min)")
    axes[0].set_ylabel("MSD (um$^2$)")
    axes[0].legend(fontsize=7)
    if tracks is not None:
        for axis, paths, title in ((axes[1], examples, "data"), (axes[2], tracks, "model")):
            for path in paths[:20]:
                path = path[~np.isnan(path[:, 0])]
                axis.plot(path[:, 1] - path[0, 1], path[:, 0] - path[0, 0], lw=0.8)
            axis.set_title(f"{title}: tracks from one origin (um)", fontsize=9)
            axis.set_aspect("equal")
        limits = max(max(abs(v) for v in axis.get_xlim() + axis.get_ylim()) for axis in axes[1:])
        for axis in axes[1:]:
            axis.set_xlim(-limits, limits)
            axis.set_ylim(-limits, limits)
    return figure


@dataclass(frozen=True)
class SpeedSample:
    """Per-track mean speeds (um/min) of data and model: the data's ``(N,)`` with their steps ``(N,)``, the
    model's ``(M,)`` with their steps ``(M,)`` and weights ``(M,)`` (steps times the class weight), and each
    model track's class ``(M,)`` (``None``: one population)."""

    data: np.ndarray
    data_steps: np.ndarray
    model: np.ndarray
    model_steps: np.ndarray
    model_weights: np.ndarray
    classes: np.ndarray | None = None


def speeds_figure(sample: SpeedSample) -> Figure:
    """Left: histograms of per-track mean speeds (um/min), data and model weighted by steps, each class's share
    drawn apart. Right: a track's mean speed against its length (points), data and model, with the medians per
    length bin (observed through a window, fast cells give short tracks)."""
    figure = Figure(figsize=(10, 3.4), layout="tight")
    axis, scatter = figure.subplots(1, 2)
    present = np.isfinite(sample.data)
    data, steps = sample.data[present], sample.data_steps[present]
    model, weights, classes = sample.model, sample.model_weights, sample.classes
    bins = np.linspace(0, max(data.max(), model.max()) * 1.05, 31)
    axis.hist(data, bins, weights=steps, density=True, color="0.6", label=f"data ({len(data)} tracks, by steps)")
    scale = 1 / (weights.sum() * (bins[1] - bins[0]))
    axis.hist(model, bins, weights=weights * scale, histtype="step", color="tab:red", lw=1.5, label="model")
    for k in ([] if classes is None else sorted(set(classes.tolist()))):
        pick = classes == k
        axis.hist(model[pick], bins, weights=weights[pick] * scale, histtype="step", ls="--", lw=1,
                  label=f"class {k}: weight {weights[pick].sum() / weights.sum():.2f}")
    axis.set_xlabel("mean speed of a track (um/min)")
    axis.set_ylabel("density")
    axis.legend(fontsize=7)
    edges = np.unique(np.quantile(np.concatenate([steps, sample.model_steps]) + 1, np.linspace(0, 1, 7)))
    for speeds, points, colour, name in ((data, steps + 1, "0.4", "data"),
                                         (model, sample.model_steps + 1, "tab:red", "model")):
        scatter.plot(points, speeds, ".", color=colour, ms=2, alpha=0.4)
        where = np.clip(np.digitize(points, edges[1:-1]), 0, len(edges) - 2)
        medians = [np.median(speeds[where == b]) if (where == b).any() else np.nan for b in range(len(edges) - 1)]
        scatter.plot((edges[1:] + edges[:-1]) / 2, medians, "o-", color=colour, label=f"{name}: median per bin")
    scatter.set_xlabel("track length (points)")
    scatter.set_ylabel("mean speed of the track (um/min)")
    scatter.legend(fontsize=7)
    return figure


def summary_figure(mcs: list[int], names: Sequence[str], target: Tensor, spread: Tensor, fitted: Tensor) -> Figure:
    """Each summary statistic over time (``(F, m)``): the target with its spread, and the fitted model's."""
    figure = Figure(figsize=(3.2 * len(names), 2.8), layout="tight")
    for j, axis in enumerate(figure.subplots(1, len(names))):
        axis.errorbar(mcs, target[:, j].cpu(), spread[:, j].cpu(), fmt="ko", ms=3, label="target")
        axis.plot(mcs, fitted[:, j].cpu(), "-", color="tab:red", label="fitted")
        axis.set_xlabel("MCS")
        axis.set_title(names[j], fontsize=9)
    figure.axes[0].legend(fontsize=8)
    return figure


def save_strip(panels: list[np.ndarray], path: str | Path) -> None:
    """Save gray images ``(H, W)`` in [0, 1] side by side, 8 white pixels apart, as an 8-bit PNG."""
    gap = np.ones((panels[0].shape[0], 8))
    strip = np.concatenate([p for panel in panels for p in (panel.astype(float), gap)][:-1], axis=1)
    Image.fromarray((strip * 255).astype(np.uint8)).save(path)


#: Colours of cell types ``1, 2, ...`` (cycled): matplotlib's ``tab10`` without its grey.
PALETTE = np.array([(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
                    (140, 86, 75), (227, 119, 194), (188, 189, 34), (23, 190, 207)], dtype=np.uint8)
MEDIUM = (255, 255, 255)
BOUNDARY = (64, 64, 64)
#: Colour of the gap between lattices shown side by side.
GAP = (160, 160, 160)


def cells_rgb(labels: Tensor, cell_types: Tensor) -> np.ndarray:
    """``(B, h, w, 3)`` uint8 images of lattices ``labels (B, H, W)`` whose ids have types ``cell_types
    (B, C)`` (or ``(C,)``): type ``k >= 1`` in ``PALETTE[(k - 1) % 9]``, the medium (type 0) white, and
    :data:`BOUNDARY` at every site whose right or lower neighbour (on the torus) has another id. Cubes
    ``(B, D, H, W)`` are drawn by :func:`volume_cells_rgb`."""
    labels = torch.as_tensor(labels).long().cpu()
    if labels.ndim == 2:
        labels = labels[None]
    cell_types = torch.as_tensor(cell_types).long().cpu().expand(labels.shape[0], -1)
    if labels.ndim == 4:
        return np.stack([volume_cells_rgb(lattice, table) for lattice, table in zip(labels, cell_types, strict=True)])
    types = cell_types.gather(1, labels.flatten(1)).view_as(labels).numpy()
    image = _colours(int(types.max()))[types]
    edge = (labels != torch.roll(labels, -1, 2)) | (labels != torch.roll(labels, -1, 1))
    image[edge.numpy()] = BOUNDARY
    return image


def _colours(n_types: int) -> np.ndarray:
    """``(1 + n, 3)`` uint8: the medium's colour, then type ``k``'s."""
    return np.concatenate([np.array([MEDIUM], dtype=np.uint8), PALETTE[np.arange(max(n_types, 1)) % len(PALETTE)]])


def _mid_planes(volume: Tensor) -> list[Tensor]:
    """The three mid-plane slices of a ``(D, H, W)`` volume: ``volume[D/2]``, ``[:, H/2]``, ``[:, :, W/2]``."""
    return [volume.select(axis, volume.shape[axis] // 2) for axis in range(3)]


def _grid(rows: list[list[np.ndarray]], fill: float | tuple, gap: int = 2) -> np.ndarray:
    """Panels ``(h, w)`` or ``(h, w, 3)`` laid out in rows, top-left aligned in cells of the largest panel's size,
    ``gap`` pixels of ``fill`` between and around nothing else."""
    height = max(panel.shape[0] for row in rows for panel in row)
    width = max(panel.shape[1] for row in rows for panel in row)
    columns = max(len(row) for row in rows)
    first = rows[0][0]
    out = np.empty(((height + gap) * len(rows) - gap, (width + gap) * columns - gap, *first.shape[2:]), first.dtype)
    out[...] = fill
    for r, row in enumerate(rows):
        for c, panel in enumerate(row):
            top, left = r * (height + gap), c * (width + gap)
            out[top: top + panel.shape[0], left: left + panel.shape[1]] = panel
    return out


def volume_cells_rgb(labels: Tensor, cell_types: Tensor) -> np.ndarray:
    """One ``(h, w, 3)`` uint8 picture of a 3D lattice ``labels (D, H, W)`` with types ``cell_types (C,)``: the top
    row its mid-plane slices (``z = D/2``, ``y = H/2``, ``x = W/2``, drawn as :func:`cells_rgb` draws a plane), then
    a row per cell type of its maximum projections along each axis (depth, rows, columns): a pixel in the type's
    colour where any site of the column holds a cell of the type, white elsewhere."""
    labels, cell_types = torch.as_tensor(labels).long(), torch.as_tensor(cell_types).long()
    types = cell_types[labels]
    colours = _colours(int(cell_types.max()))
    rows = [[cells_rgb(plane[None], cell_types)[0] for plane in _mid_planes(labels)]]
    for k in range(1, int(cell_types.max()) + 1):
        present = (types == k).numpy()
        rows.append([np.where(present.any(axis)[..., None], colours[k], np.array(MEDIUM, np.uint8))
                     for axis in range(3)])
    return _grid(rows, GAP)


def lattice_image(field: Tensor) -> Tensor:
    """A picture of one lattice's field in [0, 1] (a model's ``observe``): a plane ``(H, W)`` as it is; a volume
    ``(D, H, W)`` as its maximum projections along each axis (top row) and its mid-plane slices (bottom row), one
    white pixel apart."""
    if field.dim() == 2:
        return field
    field = field.detach().float().cpu()
    rows = [[field.amax(axis).numpy() for axis in range(3)], [plane.numpy() for plane in _mid_planes(field)]]
    return torch.from_numpy(_grid(rows, 1.0, gap=1))


def window_outline(image: Tensor, window: tuple[tuple[float, float], ...] | None) -> Tensor:
    """A plane's picture ``(H, W)`` with the imaging ``window`` (``(low, high)`` per axis, sites) drawn as a bright
    frame; a volume's picture, or no window, as it is."""
    if window is None or len(window) != 2:
        return image
    image = image.detach().float().cpu().clone()
    (top, bottom), (left, right) = ((int(low), min(int(high), side - 1)) for (low, high), side in
                                    zip(window, image.shape, strict=True))
    image[[top, bottom], left: right + 1] = 1.0
    image[top: bottom + 1, [left, right]] = 1.0
    return image


def _scaled(image: np.ndarray, scale: int) -> np.ndarray:
    return image.repeat(scale, 0).repeat(scale, 1)


def save_png(images: np.ndarray, path: str | Path, scale: int = 4, gap: int = 4) -> None:
    """Save ``images (B, H, W, 3)`` uint8 side by side, each pixel ``scale x scale``, with ``gap`` pixels
    of :data:`GAP` between them."""
    parts = []
    for i, image in enumerate(images):
        if i:
            parts.append(np.full((image.shape[0] * scale, gap, 3), GAP, dtype=np.uint8))
        parts.append(_scaled(image, scale))
    Image.fromarray(np.concatenate(parts, 1)).save(path)


def save_gif(frames: Sequence[np.ndarray], path: str | Path, scale: int = 4, duration: int = 100) -> None:
    """Save ``frames``, each ``(H, W, 3)`` uint8, as a looping GIF showing each for ``duration`` ms."""
    images = [Image.fromarray(_scaled(frame, scale)) for frame in frames]
    images[0].save(path, save_all=True, append_images=images[1:], duration=duration, loop=0)


def uncertainty_figure(params: dict[str, Any], uncertainty: dict[str, Any], truth: dict[str, Any] | None = None
                       ) -> Figure:
    """Each fitted scalar with its interval (and the truth where known), one row each; a field as a map of
    its interval widths beside its values."""
    scalars, fields = [], []
    for name, (lo, hi) in uncertainty["interval"].items():
        value = np.asarray(params[name], dtype=float)
        true = None if truth is None or name not in truth else np.asarray(truth[name], dtype=float)
        if value.ndim == 2:
            fields.append((name, value, np.asarray(hi, dtype=float) - np.asarray(lo, dtype=float)))
            continue
        for i, (v, a, b) in enumerate(zip(value.reshape(-1), np.ravel(lo), np.ravel(hi), strict=True)):
            label = name if value.ndim == 0 else f"{name}[{i}]"
            scalars.append((label, v, a, b, None if true is None else float(np.ravel(true)[i])))
    rows = len(scalars) + len(fields)
    figure = Figure(figsize=(7, 1.0 + 0.9 * len(scalars) + 3.2 * len(fields)))
    axes = figure.subplots(rows, 1, squeeze=False)[:, 0]
    for ax, (label, v, a, b, true) in zip(axes, scalars, strict=False):
        ax.plot([a, b], [0, 0], "|-", color="tab:blue", markersize=12, label="interval")  # a bootstrap's may
        ax.plot([v], [0], "o", color="tab:blue", label="fit")                               # not hold the fit
        if true is not None:
            ax.plot([true], [0], "x", color="tab:red", markersize=9, label="truth")
        ax.set_yticks([0], [label])
        ax.margins(x=0.4)
    for ax, (name, value, width) in zip(axes[len(scalars):], fields, strict=True):
        image = ax.imshow(width, cmap="magma")
        figure.colorbar(image, ax=ax, label=f"{name}: interval width")
        ax.set_title(f"{name}: {value.size} block intervals")
    if scalars and any(s[4] is not None for s in scalars):
        axes[0].legend(loc="upper right", fontsize=8)
    figure.suptitle(f"{uncertainty['level']:.0%} intervals ({uncertainty['method']})")
    figure.tight_layout()
    return figure
