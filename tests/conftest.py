"""Fixtures that compose the real Hydra config and shrink it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
os.environ.setdefault("PROJECT_ROOT", str(ROOT))

# Small enough for seconds on 2 CPU cores, large enough that the fits are meaningful.
TRAINER = [
    "trainer.max_epochs=2",
    "trainer.accelerator=cpu",
    "trainer.enable_progress_bar=false",
    "+trainer.enable_model_summary=false",
]
SHRINK = {
    "si": ["data.n_sequences=12", "data.n_frames=16", "data.size=32", "data.batch_size=16", *TRAINER],
    "prw": ["data.steps_per_epoch=50", "data.n_walkers=3000", "task.batch_size=500", "task.eval_walkers=5000",
            "task.figure_every=40", *TRAINER],
    "mk": ["data.size=16", "data.steps=200", "data.steps_per_epoch=2", "task.tau=20", "task.checkpoint_every=10",
           "task.test_size=16", "task.test_steps=100", "callbacks.pattern_test.every_n_steps=2",
           "callbacks.pattern_test.size=16", "callbacks.pattern_test.steps=50", "data.cache_dir=null", *TRAINER],
    "cpm": ["data.steps_per_epoch=30", "task.batch_size=1000", "task.eval_walkers=5000", "task.figure_every=20",
            *TRAINER],
}


@pytest.fixture
def make_cfg(tmp_path: Path):
    """``make_cfg(*overrides, experiment=...)``: the composed config, shrunk unless ``shrink=False``,
    writing into ``tmp_path``."""

    def _make(*overrides: str, experiment: str = "si_transition", output: Path | None = None,
              shrink: bool = True) -> DictConfig:
        size = SHRINK[experiment.split("_")[0]] if shrink else ["trainer.enable_progress_bar=false"]
        with initialize_config_dir(version_base="1.3", config_dir=str(CONFIGS)):
            return compose(
                "train",
                overrides=[f"experiment={experiment}", *size, f"paths.output_dir={output or tmp_path}", *overrides],
            )

    return _make


def run_cli(*args: str, cwd: Path = ROOT, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run ``python scripts/train.py ARGS`` as a user would."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "train.py"), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)
