"""Fixtures that compose the real Hydra config, shrunk by its debug config."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from slm.config import CONFIG_DIR, register_resolvers

ROOT = CONFIG_DIR.parent
register_resolvers()
EXPERIMENTS = sorted(p.stem for p in (CONFIG_DIR / "experiment").glob("*.yaml"))
os.environ.setdefault("PROJECT_ROOT", str(ROOT))


def debug_config(experiment: str) -> str:
    """The debug config that shrinks ``experiment``: the one named after its data config."""
    with initialize_config_dir(version_base="1.3", config_dir=str(CONFIG_DIR)):
        cfg = compose("train", overrides=[f"experiment={experiment}"], return_hydra_config=True)
    return cfg.hydra.runtime.choices.data


@pytest.fixture
def make_cfg(tmp_path: Path):
    """``make_cfg(*overrides, experiment=...)``: the composed config, shrunk by its debug config unless
    ``shrink=False``, writing into ``tmp_path``."""

    def _make(*overrides: str, experiment: str = "si_transition", output: Path | None = None,
              shrink: bool = True) -> DictConfig:
        size = [f"debug={debug_config(experiment)}"] if shrink else ["trainer.enable_progress_bar=false"]
        with initialize_config_dir(version_base="1.3", config_dir=str(CONFIG_DIR)):
            return compose(
                "train",
                overrides=[f"experiment={experiment}", *size, f"paths.output_dir={output or tmp_path}", *overrides],
            )

    return _make


def run_cli(*args: str, cwd: Path = ROOT, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run ``python scripts/train.py ARGS`` as a user would."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}  # so that configs can name callbacks in tests.helpers
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "train.py"), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)
