"""A straightforward PyTorch Malevanets-Kapral model: the naive reference that the speed targets of
:mod:`slm.models.malevanets_kapral` are measured against (``scripts/benchmark.py``), written the obvious way."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from slm.models.malevanets_kapral import DIRECTIONS, PARAMETERS, REFERENCE, direction_probabilities


class NaiveMK(torch.nn.Module):
    """A straightforward PyTorch MK (the naive reference of the speed targets), for comparison only: all 9
    shifted copies of the excited lattice weighted by the one-hot direction, all 6 channels drawn and masked, autograd
    through every step, no checkpointing. Parameters start at :data:`~slm.models.malevanets_kapral.REFERENCE`;
    noise comes from torch's global generator. ``model(x)`` is one step of ``x`` ``(B, 2, H, W)``."""

    def __init__(self, N: int = 50, gamma: float = 0.005):
        super().__init__()
        self.values = torch.nn.Parameter(torch.tensor([REFERENCE[name] for name in PARAMETERS]))
        self.N, self.gamma = N, gamma

    @staticmethod
    def _st(hard: torch.Tensor, soft: torch.Tensor) -> torch.Tensor:
        return hard + soft - soft.detach()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        N, (D_A, D_B, k1, k2, k3) = self.N, self.values
        species = []
        for X, D in ((x[:, 0], D_A), (x[:, 1], D_B)):
            threshold = X - N * torch.rand_like(X)
            E = self._st((threshold > 0).float(), threshold)
            X = X - E
            gumbel = -torch.log(-torch.log(torch.rand(X.shape[0], 9, device=X.device)))
            logits = torch.log(direction_probabilities(D)) + gumbel
            z = self._st(F.one_hot(logits.argmax(-1), 9).float(), torch.softmax(logits, -1))
            X = X + sum(z[:, k, None, None] * torch.roll(E, shifts=shift, dims=(-2, -1))
                        for k, shift in enumerate(DIRECTIONS))
            species.append(X)
        A, B = species
        channel = torch.randint(6, A.shape, device=A.device)
        p = [self.gamma * k1 * A * (A - 1) * (N - A) / ((N - 1) * (N - 2)),
             self.gamma * k1 * A * (N - A) * (N - A - 1) / ((N - 1) * (N - 2)),
             self.gamma * k2 * (N - A) * B / N, self.gamma * k2 * A * (N - B) / N,
             self.gamma * k3 * (N - A) * (N - B) / N, self.gamma * k3 * A * B / N]
        fired = []
        for r, p_r in enumerate(p):
            p_r = p_r.clamp(0, 1)
            fired.append(self._st((torch.rand_like(p_r) < p_r).float(), p_r) * (channel == r))
        return torch.stack([A + fired[0] - fired[1] + fired[2] - fired[3], B + fired[4] - fired[5]], dim=1)
