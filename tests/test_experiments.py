"""Every experiment config composes and trains, shrunk by its debug config; every model trains with the
score estimator; every package exports all its public classes."""

import importlib
import inspect
import json
import math
import pkgutil

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from PIL import Image

from slm.train import train
from tests.conftest import EXPERIMENTS, ROOT


@pytest.fixture
def dis5k_split(tmp_path):
    """A DIS5K-layout split folder with one generated image and its mask (DIS5K itself may not be shipped)."""
    for folder in ("im", "gt"):
        (tmp_path / "split" / folder).mkdir(parents=True)
    image = np.zeros((40, 48, 3), np.uint8)
    image[10:30, 12:36] = 200
    Image.fromarray(image).save(tmp_path / "split" / "im" / "thing.jpg")
    Image.fromarray((image[..., 0] > 100).astype(np.uint8) * 255).save(tmp_path / "split" / "gt" / "thing.png")
    return tmp_path / "split"


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_trains_a_shrunken_step(make_cfg, tmp_path, dis5k_split, experiment):
    extra = {"seg_dis5k": [f"data.path={dis5k_split}", "data.name=thing"],
             "seg_image": [f"data.path={ROOT / 'data/bbbc005/site_example/synthetic2_in_focus_image.png'}"],
             "cpm_tcells_mixture": ["data.batch_size=3", "task.eval_lattices=3"],  # a lattice for each class
             "cpm_tcells_3d": ["data.batch_size=3", "task.eval_lattices=3", "data.size=[12,16,16]",
                               "data.window=[0.8,0.6,0.6]", "model.cells=4", "model.volume_target=8",
                               "model.surface_target=150"]}
    extra = extra.get(experiment, [])
    results = train(make_cfg("+trainer.max_steps=2", *extra, experiment=experiment))
    assert results["steps"] == 2
    assert json.loads((tmp_path / "results.json").read_text()) == results
    values = [v for value in results["params"].values() for v in np.ravel(value)]
    assert all(math.isfinite(v) for v in values)
    checkpoint = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)
    assert checkpoint["hyper_parameters"]["task_name"] == experiment


@pytest.mark.parametrize(("experiment", "overrides"), [
    ("si_transition", []),
    ("prw_synthetic", []),
    ("cpm_msd", []),
    ("mk_e3", ["task.checkpoint_every=null", "data.batch_size=2"]),
    ("cpm_sorting", []),
])
def test_every_model_trains_with_the_score_estimator(make_cfg, experiment, overrides):
    start = instantiate(make_cfg(experiment=experiment).model).parameter_values()
    results = train(make_cfg("estimator=score", "uq=none", "+trainer.max_steps=4", *overrides, experiment=experiment))
    assert results["steps"] == 4
    moved = [name for name, value in results["params"].items() if abs(value - float(start[name])) > 1e-6]
    assert moved == list(results["params"]), f"score gave no gradient to {set(results['params']) - set(moved)}"


@pytest.mark.parametrize("package", ["slm.models", "slm.tasks", "datamodules"])
def test_packages_export_every_public_class(package):
    module = importlib.import_module(package)
    public = set()
    for info in pkgutil.iter_modules(module.__path__):
        submodule = importlib.import_module(f"{package}.{info.name}")
        public |= {name for name, obj in vars(submodule).items()
                   if inspect.isclass(obj) and obj.__module__ == submodule.__name__ and not name.startswith("_")}
    assert public <= set(module.__all__), f"{package}.__all__ misses {sorted(public - set(module.__all__))}"


def test_the_documented_imports_work():
    import datamodules
    import slm.models
    import slm.tasks

    documented = {datamodules: ["ImageDataModule", "LatticeStatisticsDataModule", "MSDDataModule",
                                "PatternDataModule", "SITransitionDataModule"],
                  slm.models: ["SI", "CellularPotts", "MalevanetsKapral", "OnePixelCPM", "PersistentRandomWalk",
                               "PixelField"],
                  slm.tasks: ["SegmentationFitting", "StabilityFitting", "StatisticsFitting", "SummaryFitting",
                              "TransitionFitting"]}
    for module, names in documented.items():
        assert all(inspect.isclass(getattr(module, name)) for name in names)


def test_per_step_calls_reuse_what_depends_on_the_parameters_only():
    import copy

    from slm.models import MalevanetsKapral, uniform_state

    model = MalevanetsKapral()
    x = uniform_state(1, 8)
    generator = torch.Generator().manual_seed(0)
    first = model.prepared()
    y = model(model(x, generator), generator)
    assert model.prepared() is first, "two steps with the same parameters share one prepare()"
    copy.deepcopy(model)  # the cached graph is not copied
    torch.log(((y - x) ** 2).sum() + 1).backward()
    assert model.prepared() is not first, "a backward pass frees the cached graph, so it is rebuilt"
    second = model.prepared()
    with torch.no_grad():
        model.parametrizations.k1.original.add_(0.01)
    assert model.prepared() is not second, "a parameter update invalidates the cache"
    with torch.no_grad():
        assert not model.prepared()[1].requires_grad
