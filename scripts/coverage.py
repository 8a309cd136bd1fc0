"""Coverage of a coverage study: ``python scripts/coverage.py SWEEP_DIR... [--bootstrap DIR...] [--out F.json]``.

The sweep is a Hydra multirun of one experiment with its coverage config (``configs/coverage/``), e.g.
``python scripts/train.py -m experiment=si_transition coverage=si_transition``; see docs/uncertainty.md.
"""

from __future__ import annotations

import json
from pathlib import Path

from slm.config import ArgumentParser
from slm.studies.coverage import coverage, coverage_figure, read_jobs, se_ratio, si_reference


def main() -> None:
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweeps", nargs="+", type=Path, help="multirun folders (one job folder per truth)")
    parser.add_argument("--bootstrap", nargs="+", type=Path, help="uq=bootstrap sweeps of the same truths: se ratio")
    parser.add_argument("--out", type=Path, help="write the result as JSON (and a .png figure beside it)")
    parser.add_argument("--title", default=None, help="figure title (default: the sweep folder's parent name)")
    args = parser.parse_args()
    for sweep in args.sweeps + (args.bootstrap or []):
        if not sweep.is_dir():
            raise SystemExit(f"error: sweep: not a folder: {sweep}")
    jobs = read_jobs(*args.sweeps)
    result = coverage(jobs) | si_reference(jobs)
    if args.bootstrap:
        result["se_sandwich_over_bootstrap"] = se_ratio(jobs, read_jobs(*args.bootstrap))
    print(f"{result['jobs']} truths, {result['failed']} failed")
    for name, values in result.get("parameters", {}).items():
        row = " ".join(f"{level}:{v['coverage']:.3f}" for level, v in values["coverage"].items())
        print(f"{name:>14}  {row}  median 90% width {values['median_width_90']:.4g}")
    if "joint" in result:
        print(f"{'joint':>14}  " + " ".join(f"{lv}:{v['coverage']:.3f}" for lv, v in result["joint"].items()))
    print(json.dumps({k: v for k, v in result.items() if k not in ("parameters", "joint", "levels")}))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
        title = args.title or args.sweeps[0].resolve().parent.name
        coverage_figure(result, title).savefig(args.out.with_suffix(".png"), dpi=120)


if __name__ == "__main__":
    main()
