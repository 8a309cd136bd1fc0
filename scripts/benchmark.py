"""Speed benchmark: ``python scripts/benchmark.py [--device cuda] [--repeats 7] [--only CASE ...]``.

Prints one Markdown table: model, lattice, batch, forward steps/s (no grad), time of one gradient
step (forward, backward, optimiser), time of one training epoch through the real Lightning loop
where it applies, and peak memory. Fixed seeds, warm-up runs, medians of ``--repeats`` runs. Each
case runs in its own process so that its peak memory (CUDA: allocated; CPU: resident set above the
process's baseline) is its own. The cases are in :mod:`slm.studies.benchmark`. ``--json`` keeps the rows,
``--plot`` draws the copy attempts/s of the CPM rows against lattice size and batch (log-log).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from slm.config import ArgumentParser
from slm.errors import InputError
from slm.studies.benchmark import CASES, CaseError, markdown, run_cases, throughput_figure


def main(argv: list[str] | None = None) -> None:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--only", nargs="*", help=f"case names to run (default: all): {', '.join(CASES)}")
    parser.add_argument("--json", type=Path, help="write the rows to this JSON file")
    parser.add_argument("--plot", type=Path, help="draw the CPM rows' copy attempts/s into this PNG")
    args = parser.parse_args(argv)
    try:
        rows = run_cases(args.only or None, args.device, args.repeats)
    except (InputError, CaseError) as err:
        raise SystemExit(f"error: {err}") from None
    print(f"device: {args.device}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(markdown(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    if args.plot:
        throughput_figure(rows, str(args.plot))


if __name__ == "__main__":
    main()
