"""Summarise runs as a Markdown table: ``python scripts/summarize.py logs/si_transition/multiruns/<time>``.

Finds every ``results.json`` below the given folders and prints one row per run: the run's command-line
overrides (from Hydra's ``.hydra/overrides.yaml``), its fitted parameters and metrics, steps and seconds.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import yaml

from slm.config import ArgumentParser


def rows(folders: list[Path]) -> list[dict[str, str]]:
    table = []
    for results_path in sorted(p for folder in folders for p in folder.rglob("results.json")):
        results = json.loads(results_path.read_text())
        overrides_path = results_path.parent / ".hydra" / "overrides.yaml"
        overrides = yaml.safe_load(overrides_path.read_text()) if overrides_path.is_file() else []
        row = {"run": " ".join(o for o in overrides if not o.startswith(("hydra.", "trainer.enable_progress")))}
        row |= {k: _fmt(v) for k, v in {**results["params"], **results["metrics"]}.items()}
        row |= {"steps": str(results["steps"]), "seconds": f"{results['seconds']:.1f}"}
        table.append(row)
    return table


def _fmt(value: object) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def markdown(table: list[dict[str, str]]) -> str:
    columns = list(dict.fromkeys(k for row in table for k in row))
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(row.get(c, "") for c in columns) + " |" for row in table]
    return "\n".join(lines)


def main() -> None:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folders", nargs="+", type=Path, help="run or sweep folders")
    table = rows(parser.parse_args().folders)
    if not table:
        raise SystemExit("error: no results.json below the given folders")
    print(markdown(table))


if __name__ == "__main__":
    main()
