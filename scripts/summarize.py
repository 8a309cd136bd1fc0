"""Summarise runs as a Markdown table: ``python scripts/summarize.py logs/si_transition/multiruns/<time>``.

Finds every ``results.json`` below the given folders and prints one row per run: the run's command-line
overrides (from Hydra's ``.hydra/overrides.yaml``), its fitted parameters and metrics, whether it converged,
steps and seconds. ``--columns msd_rel_error speed_rel_error`` keeps those (and the run), with a last row of
each column's largest value over the runs.
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
        row |= {"converged": str(results.get("converged")), "steps": str(results["steps"]),
                "seconds": f"{results['seconds']:.1f}"}
        table.append(row)
    return table


def _fmt(value: object) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def largest(table: list[dict[str, str]], columns: list[str]) -> dict[str, str]:
    """A row of each of ``columns``' largest value over the ``table`` (blank where a value is not a number)."""
    row = {"run": "**largest**"}
    for column in columns:
        try:
            row[column] = _fmt(max(float(r[column]) for r in table))
        except (KeyError, ValueError):
            row[column] = ""
    return row


def markdown(table: list[dict[str, str]], columns: list[str] | None = None) -> str:
    columns = ["run", *columns] if columns else list(dict.fromkeys(k for row in table for k in row))
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(row.get(c, "") for c in columns) + " |" for row in table]
    return "\n".join(lines)


def main() -> None:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folders", nargs="+", type=Path, help="run or sweep folders")
    parser.add_argument("--columns", nargs="+", help="the columns to keep, with a row of their largest values")
    args = parser.parse_args()
    table = rows(args.folders)
    if not table:
        raise SystemExit("error: no results.json below the given folders")
    if args.columns:
        unknown = sorted(set(args.columns) - {k for row in table for k in row})
        if unknown:
            raise SystemExit(f"error: --columns: no run has {unknown}")
        table.append(largest(table, args.columns))
    print(markdown(table, args.columns))


if __name__ == "__main__":
    main()
