"""Intervals for finished runs, again: ``python scripts/uncertainty.py RUN_DIR... [--set uq=bootstrap uq.level=0.95]``.

Reads the run's config and latest checkpoint, computes ``uq`` (default: the run's own, else ``uq=sandwich``) and
writes ``uncertainty`` into its ``results.json`` (docs/uncertainty.md).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from slm.config import CONFIG_DIR, ArgumentParser, check_arguments
from slm.errors import InputError
from slm.reestimate import estimate_uncertainty

os.environ.setdefault("PROJECT_ROOT", str(CONFIG_DIR.parent))


def main() -> None:
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run folders (.hydra/, checkpoints/, results.json)")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides, e.g. uq=bootstrap")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        check_arguments(args.set)
        for run in args.runs:
            estimate_uncertainty(run, args.set)
    except InputError as err:
        raise SystemExit(f"error: {err}") from None


if __name__ == "__main__":
    main()
