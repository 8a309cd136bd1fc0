"""The Hydra configs: composing them, their resolvers, checking them, building their parts, and one line for every
bad input.

Everything that composes or instantiates a config goes through here: :func:`slm.train.train`,
``scripts/simulate.py``, the studies and the scripts. A problem with what a user typed becomes one
:class:`slm.errors.InputError` line naming the key, the value and what was expected, before any compute:

* :func:`check_arguments` (the command line, before Hydra sees it): an unknown config-group option (``uq=foo``),
  an unknown key (``model.bta=0.3``: the closest known keys), a value of the wrong type (``model.beta=abc``,
  ``seed=abc``: the default's type);
* :func:`check_settings` (the composed config): non-finite numbers, negative optimiser settings, run lengths;
* :func:`build` (instantiation): our own errors unwrapped, and a part that refuses its arguments (``+model.bta=1``)
  named with the keys it takes;
* :class:`ArgumentParser` (the other scripts): argparse's errors in one line.
"""

from __future__ import annotations

import argparse
import difflib
import inspect
import math
import os
import zlib
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import torch
from hydra import compose, initialize_config_dir
from hydra.errors import HydraException, InstantiationException
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf

from slm.errors import InputError

#: The Hydra configs of the repository (``configs/`` beside the package).
CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
#: Optimiser and scheduler settings that must be positive (all others there must be >= 0).
POSITIVE = ("lr", "max_lr")


def draw(index: int, key: str, box: Any) -> float:
    """``low + (high - low) u`` with ``u`` uniform in [0, 1) fixed by ``(key, index)``, for ``box = [low, high]``
    (``high < low`` gives ``1 - x`` of the box reversed: a mixture's second weight): the resolver
    ``${draw:index,key,box}`` that gives every job of a coverage study its own truth and start
    (``configs/coverage/``)."""
    low, high = (float(v) for v in box)
    seed = np.random.SeedSequence([int(index), zlib.crc32(key.encode())])
    return low + (high - low) * float(np.random.default_rng(seed).random())


def register_resolvers() -> None:
    """Register the configs' resolvers (``draw``) with OmegaConf; every entry point that composes calls it."""
    OmegaConf.register_new_resolver("draw", draw, replace=True)


def compose_config(*overrides: str) -> DictConfig:
    """The training config as ``scripts/train.py`` composes it, with ``overrides`` (``experiment=...``,
    ``key=value``), outside a Hydra run: set ``paths.output_dir`` to where the run should write."""
    register_resolvers()
    os.environ.setdefault("PROJECT_ROOT", str(CONFIG_DIR.parent))
    with initialize_config_dir(version_base="1.3", config_dir=str(CONFIG_DIR)):
        return compose("train", overrides=list(overrides))


def build(node: DictConfig | dict, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate``, with our own one-line :class:`InputError` let through unwrapped and a part
    that refuses its arguments (a misspelt key, a value of the wrong type) named in one line."""
    try:
        return instantiate(node, **kwargs)
    except InstantiationException as err:
        cause = err.__cause__
        while isinstance(cause, InstantiationException):  # nested nodes (a model's estimator) wrap it again
            cause = cause.__cause__
        if isinstance(cause, InputError):
            raise cause from None
        if isinstance(cause, TypeError | ValueError):
            raise InputError(_refusal(node, err, cause)) from None
        raise


def _refusal(node: DictConfig | dict, err: InstantiationException, cause: Exception) -> str:
    """One line for a part whose constructor refused its arguments."""
    key = getattr(err, "full_key", None) or (node._get_full_key(None) if isinstance(node, DictConfig) else "") \
        or "config"
    target = node.get("_target_", "?") if hasattr(node, "get") else "?"
    unexpected = str(cause).rsplit("unexpected keyword argument ", 1)
    if len(unexpected) == 2:
        name = unexpected[1].strip("'\"")
        try:
            taken = [p for p in inspect.signature(get_class(target)).parameters if p not in ("self", "args", "kwargs")]
        except Exception:  # a target that is not a class: no keys to offer
            taken = []
        return f"{key}.{name}: unknown key for {target.rsplit('.', 1)[-1]}{_suggest(name, taken, key)}"
    return f"{key}: {target.rsplit('.', 1)[-1]} refused its settings ({type(cause).__name__}: {cause})"


def _suggest(name: str, known: list[str], prefix: str) -> str:
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
    if close:
        return "; did you mean " + " or ".join(f"{prefix}.{c}" if prefix else c for c in close) + "?"
    return f"; known keys: {', '.join(sorted(known))}" if known else ""


#: The task's keys read by :mod:`slm.restarts`, not by the task's constructor.
RESTART_KEYS = ("restarts", "restart_spread", "restart_seed")


def build_task_and_data(cfg: DictConfig) -> tuple[Any, Any]:
    """Instantiate ``cfg.model`` (with its estimators), set up ``cfg.data``, and instantiate ``cfg.task`` around the
    model with the data's declared target (:mod:`slm.targets`)."""
    simulator = build(cfg.model)
    datamodule = build(cfg.data)
    datamodule.setup("fit")
    # Hydra would turn a dataclass argument into a config node: the target goes to the built constructor
    settings = {k: v for k, v in OmegaConf.to_container(cfg.task, resolve=True).items() if k not in RESTART_KEYS}
    task = build(settings, _partial_=True)(simulator=simulator, target=datamodule.task_target())
    return task, datamodule


# -- the command line ------------------------------------------------------------------------------------


def check_arguments(arguments: list[str]) -> None:
    """Refuse, in one line, what Hydra would refuse in many (or not at all) before it composes: an unknown option
    of a config group (``uq=foo``), a key that is not in the config (``model.bta=0.3``) and a value whose type is
    not the default's (``model.beta=abc``). Sweeps (``a=1,2``) and Hydra's own settings are left to Hydra."""
    check_choices(arguments)
    if any(a.startswith(("--config-dir", "-cd")) for a in arguments):
        return  # options of another folder: Hydra composes them
    plain = [a for a in arguments if not a.startswith("-") and "=" in a and not _sweep(a)
             and not a.lstrip("+~").startswith("hydra")]
    groups = [a for a in plain if (CONFIG_DIR / a.split("=", 1)[0].lstrip("+~")).is_dir()]
    try:
        cfg = compose_config(*plain)
    except HydraException as err:
        raise InputError(_composition_error(err, plain)) from None
    values = [a for a in plain if a not in groups and not a.startswith(("+", "~"))]
    if not values:
        return
    defaults = compose_config(*groups)  # the same experiment and groups, without the user's values
    for argument in values:
        key = argument.split("=", 1)[0]
        try:
            _check_type(key, OmegaConf.select(defaults, key), OmegaConf.select(cfg, key))
        except InputError:
            raise
        except Exception:  # an interpolation that resolves only in a run: Hydra and the parts check it
            continue


def _sweep(argument: str) -> bool:
    value = argument.split("=", 1)[1]
    return "," in value and not value.startswith("[") or value.startswith(("range(", "choice(", "glob(", "interval("))


def _check_type(key: str, default: Any, value: Any) -> None:
    """A number where the default is a number, true/false where it is a boolean, a list where it is a list."""
    if default is None or value is None or isinstance(default, DictConfig | dict):
        return
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise InputError(f"{key}: expected true or false, got {value!r}")
    elif isinstance(default, int | float):
        if isinstance(value, bool) or not isinstance(value, int | float):
            kind = "an integer" if isinstance(default, int) else "a number"
            raise InputError(f"{key}: expected {kind}, got {value!r}")
    elif isinstance(default, ListConfig | list) and not isinstance(value, ListConfig | list):
        raise InputError(f"{key}: expected a list like [{', '.join(map(str, list(default)[:3]))}], got {value!r}")


def _composition_error(err: HydraException, arguments: list[str]) -> str:
    """One line for Hydra's refusal to compose: an unknown key names the closest known ones."""
    text = str(err)
    if "Could not override '" in text:
        key = text.split("Could not override '", 1)[1].split("'", 1)[0]
        parent, _, name = key.rpartition(".")
        try:
            node = OmegaConf.select(compose_config(*[a for a in arguments if a.split("=", 1)[0] != key]), parent) \
                if parent else compose_config()
        except HydraException:
            node = None
        known = list(node.keys()) if isinstance(node, DictConfig) else []
        return f"{key}: unknown key{_suggest(name, known, parent)} (add a new one with +{key}=...)"
    first = next((line.strip() for line in text.splitlines() if line.strip()), type(err).__name__)
    return f"config: {first}"


def check_choices(arguments: list[str]) -> None:
    """Refuse, in one line, a command-line choice of a config group that does not exist (``uq=foo``), before
    Hydra composes (whose own message spans many lines); a ``--config-dir`` adds its options."""
    folders = [CONFIG_DIR]
    for i, argument in enumerate(arguments):
        if argument in ("--config-dir", "-cd") and i + 1 < len(arguments):
            folders.append(Path(arguments[i + 1]))
        elif argument.startswith("--config-dir="):
            folders.append(Path(argument.split("=", 1)[1]))
    for argument in arguments:
        key, _, value = argument.partition("=")
        groups = [folder / key.lstrip("+~") for folder in folders]
        if argument.startswith("-") or not value or not groups[0].is_dir() or value == "null" or "," in value \
                or "(" in value:
            continue
        options = sorted({p.stem for group in groups if group.is_dir() for p in group.glob("*.yaml")})
        if value not in options:
            raise InputError(f"{key}: unknown option {value!r}; expected one of {', '.join(options)}")


class ArgumentParser(argparse.ArgumentParser):
    """argparse with its errors in one line (``error: ...``) instead of the usage block."""

    def error(self, message: str) -> NoReturn:
        raise SystemExit(f"error: {message}")


# -- the composed config ---------------------------------------------------------------------------------


def check_settings(cfg: DictConfig) -> None:
    """Refuse, in one line naming the key, a non-finite number anywhere in the config, a negative or
    zero learning rate, a negative optimiser or scheduler setting, or a run length below one."""
    def walk(node: Any, key: str) -> None:
        if isinstance(node, dict):
            for name, value in node.items():
                walk(value, f"{key}.{name}" if key else str(name))
        elif isinstance(node, list):
            for i, value in enumerate(node):
                walk(value, f"{key}[{i}]")
        elif isinstance(node, float) and not math.isfinite(node):
            raise InputError(f"{key}: expected a finite number, got {node}")
        elif isinstance(node, int | float) and not isinstance(node, bool):
            name = key.rsplit(".", 1)[-1]
            if key.startswith(("task.optimizer.", "task.scheduler.")) and not name.startswith("_"):
                if name in POSITIVE and node <= 0:
                    raise InputError(f"{key}: expected a positive learning rate, got {node}")
                if node < 0:
                    raise InputError(f"{key}: expected a number >= 0, got {node}")

    walk(OmegaConf.to_container(cfg, resolve=True), "")
    for key in ("trainer.max_epochs", "trainer.max_steps"):
        value = OmegaConf.select(cfg, key)
        if value is not None and value != -1 and not (isinstance(value, int) and value >= 1):
            raise InputError(f"{key}: expected a positive integer (or -1 for no limit), got {value}")
    seed = cfg.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise InputError(f"seed: expected an integer or null, got {seed!r}")


def check_checkpoint(ckpt_path: str | None) -> None:
    """Fail early, in one line, on a missing or unreadable checkpoint."""
    if ckpt_path is None:
        return
    if not Path(ckpt_path).is_file():
        raise InputError(f"ckpt_path: file not found: {ckpt_path}")
    try:
        checkpoint = torch.load(ckpt_path, map_location="cpu", weights_only=False)
    except Exception as err:  # torch raises many kinds for a corrupt file
        raise InputError(f"ckpt_path: cannot read {ckpt_path} as a checkpoint ({type(err).__name__})") from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise InputError(f"ckpt_path: {ckpt_path} is not a Lightning checkpoint (no 'state_dict')")
