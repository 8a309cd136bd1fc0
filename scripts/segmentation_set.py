"""The segmentation evaluation set and the calibration of ``seg_image``'s level rule.

    python scripts/segmentation_set.py --out data/segmentation_set      # write images/ and masks/
    python scripts/train.py experiment=seg_image data.path=data/segmentation_set/images \\
        data.mask_path=data/segmentation_set/masks                      # fit it: items.csv, mean in results.json
    python scripts/segmentation_set.py --calibrate                       # the level rule, on other seeds
    python scripts/segmentation_set.py --settings data/bbbc005/images    # what seg_image reads off each image
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from slm.config import ArgumentParser
from slm.studies.segmentation_set import calibrate_level, image_settings, write_evaluation_set

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("PROJECT_ROOT", str(ROOT))


def main() -> None:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, help="write the evaluation set here (images/ and masks/)")
    parser.add_argument("--example", type=Path, default=ROOT / "data" / "bbbc005" / "site_example",
                        help="folder of the BBBC005 example pair")
    parser.add_argument("--calibrate", action="store_true", help="fit the level rule on calibration images")
    parser.add_argument("--settings", type=Path, help="print the blur, object size, level and window of every "
                        "image of this file or folder")
    args = parser.parse_args()
    if not (args.out or args.calibrate or args.settings):
        parser.error("give --out DIR, --calibrate or --settings PATH")
    if args.out:
        print(f"evaluation set: {write_evaluation_set(args.out, args.example)}")
    if args.settings:
        print_table(image_settings(args.settings))
    if args.calibrate:
        rows, (base, slope) = calibrate_level()
        print_table(rows)
        print(f"level rule: q = {base:.4f} + {slope:.4f} sigma (least squares through the best levels)")


def print_table(rows: list[dict]) -> None:
    columns = list(dict.fromkeys(c for row in rows for c in row))
    print("| " + " | ".join(columns) + " |\n|" + "---|" * len(columns))
    for row in rows:
        print("| " + " | ".join(f"{row[c]:.4f}" if isinstance(row.get(c), float) else str(row.get(c, ""))
                                for c in columns) + " |")


if __name__ == "__main__":
    main()
