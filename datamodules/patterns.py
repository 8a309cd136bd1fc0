"""Reference patterns X_ref of the Malevanets-Kapral model for stability fitting."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader

from datamodules.msd import RepeatTarget
from slm.errors import InputError
from slm.io import load_pattern
from slm.models.malevanets_kapral import PARAMETERS, REFERENCE, MalevanetsKapral, uniform_state
from slm.targets import Target

log = logging.getLogger(__name__)


class PatternDataModule(L.LightningDataModule):
    """Serves ``X_ref``: ``(B, 2, H, W)`` counts, the same batch at every step.

    With ``path``: the user's pattern (see :func:`load_pattern`). Without: ``batch_size`` lattices of
    ``size x size`` simulated for ``steps`` steps from :func:`uniform_state` with the ``reference``
    parameters, seeded by ``seed``, and cached in ``cache_dir`` (keyed by all of these).

    Args:
        reference: ``{"D_A": .., "D_B": .., "k1": .., "k2": .., "k3": ..}`` of the reference pattern
            (default :data:`slm.models.malevanets_kapral.REFERENCE`; the experiments pass ``truth``).
        N, gamma: lattice-gas constants (as the model's).
        steps_per_epoch: gradient steps per epoch.
    """

    def __init__(self, path: str | None = None, reference: dict | None = None, size: int = 64, steps: int = 20000,
                 batch_size: int = 1, N: int = 50, gamma: float = 0.005, cache_dir: str | None = None,
                 seed: int = 0, steps_per_epoch: int = 100):
        super().__init__()
        reference = dict(reference or REFERENCE)
        if set(reference) != set(PARAMETERS):
            raise InputError(f"data.reference: expected values for {', '.join(PARAMETERS)}, got {sorted(reference)}")
        for name, value in (("data.size", size), ("data.steps", steps), ("data.batch_size", batch_size),
                            ("data.steps_per_epoch", steps_per_epoch)):
            if not (isinstance(value, int) and value >= 1):
                raise InputError(f"{name}: expected a positive integer, got {value}")
        self.save_hyperparameters(logger=False)
        self.reference = reference
        self.pattern: Tensor | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.pattern is not None:
            return
        hp = self.hparams
        if hp.path:
            self.pattern = load_pattern(hp.path, hp.N)
            return
        key = json.dumps({**self.reference, "size": hp.size, "steps": hp.steps, "batch": hp.batch_size, "N": hp.N,
                          "gamma": hp.gamma, "seed": hp.seed}, sort_keys=True)
        digest = hashlib.sha1(key.encode()).hexdigest()[:12]
        cache = Path(hp.cache_dir) / f"mk_reference_{digest}.pt" if hp.cache_dir else None
        if cache is not None and cache.is_file():
            self.pattern = torch.load(cache)
            log.info("reference pattern from cache %s", cache)
            return
        model = MalevanetsKapral(**self.reference, N=hp.N, gamma=hp.gamma)
        log.info("simulating the reference pattern: %d x %dx%d, %d steps (%s)", hp.batch_size, hp.size, hp.size,
                 hp.steps, key)
        with torch.no_grad():
            self.pattern = model.rollout(uniform_state(hp.batch_size, hp.size, hp.N), hp.steps,
                                         torch.Generator().manual_seed(hp.seed))
        if cache is not None:
            cache.parent.mkdir(parents=True, exist_ok=True)
            torch.save(self.pattern, cache)

    def task_target(self) -> Target:
        """Nothing beyond the batches (the reference patterns)."""
        return Target()

    def train_dataloader(self) -> DataLoader:
        return DataLoader(RepeatTarget(self.pattern, self.hparams.steps_per_epoch), batch_size=None)
