"""Train: ``python scripts/train.py experiment=si_transition [overrides]``."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from slm.config import check_arguments, register_resolvers
from slm.errors import InputError, NonFiniteError
from slm.train import train

os.environ.setdefault("PROJECT_ROOT", str(Path(__file__).resolve().parents[1]))


@hydra.main(version_base="1.3", config_path="../configs", config_name="train")
def main(cfg: DictConfig) -> None:
    try:
        train(cfg)
    except (InputError, NonFiniteError) as err:
        raise SystemExit(f"error: {err}") from None


if __name__ == "__main__":
    try:
        check_arguments(sys.argv[1:])
    except InputError as err:
        raise SystemExit(f"error: {err}") from None
    register_resolvers()
    main()
