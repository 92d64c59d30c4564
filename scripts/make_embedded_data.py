"""Regenerate the embedded UC Merced subset shipped in prunekit/data/embedded/ucmerced64.

Takes every other image of each class of the full UC Merced Land Use set (sorted names, so 50 of 100 per class, all
21 classes), resizes it to 64x64 with an antialiasing filter and stores it as JPEG quality 90. Deterministic: the same
source folder always gives the same files.

    python scripts/make_embedded_data.py [--src ../shared/data/ucmerced] [--out prunekit/data/embedded/ucmerced64]
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from PIL import Image

REPO = Path(__file__).resolve().parents[1]
PER_CLASS = 50
SIZE = 64
QUALITY = 90
EXTENSIONS = {".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp"}

README = """# UC Merced Land Use: embedded 64 px subset

{n_classes} classes x {per_class} images = {n_images} RGB images, 64x64, JPEG quality {quality}. This is the default
data of `prunekit.data.load_dataset()` so that tests, the demo and first experiments run without a download.

## Source and attribution

Yi Yang and Shawn Newsam, "Bag-Of-Visual-Words and Spatial Extensions for Land-Use Classification",
ACM SIGSPATIAL International Conference on Advances in Geographic Information Systems (ACM GIS), 2010.

The images were extracted from large images of the USGS National Map Urban Area Imagery collection for various urban
areas around the United States. The imagery is in the public domain (USGS). Original tiles: 256x256 px, 1 ft
(0.3 m) per pixel, 100 images per class.

## How it was generated

`python scripts/make_embedded_data.py --src <UCMerced_LandUse/Images>`: for each class (sorted), the sorted image
names are taken at even positions (every other image: {per_class} of 100), converted to RGB, resized to 64x64 with
Pillow's Lanczos filter (antialiased) and saved as JPEG quality {quality}, with the original file stem.

Classes: {classes}
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", type=Path, default=REPO.parent / "shared" / "data" / "ucmerced",
                        help="UC Merced folder, one subfolder per class (default: ../shared/data/ucmerced)")
    parser.add_argument("--out", type=Path, default=REPO / "prunekit" / "data" / "embedded" / "ucmerced64")
    args = parser.parse_args(argv)
    if not args.src.is_dir():
        print(f"error: source folder {args.src} does not exist; pass --src pointing to UC Merced's Images folder",
              file=sys.stderr)
        return 2
    classes = sorted(p.name for p in args.src.iterdir() if p.is_dir() and not p.name.startswith("."))
    if args.out.exists():
        shutil.rmtree(args.out)
    total = 0
    for name in classes:
        files = sorted(p for p in (args.src / name).iterdir() if p.suffix.lower() in EXTENSIONS)
        chosen = files[::2][:PER_CLASS]
        if len(chosen) < PER_CLASS:
            print(f"error: class folder {args.src / name} has {len(files)} images, need {2 * PER_CLASS}",
                  file=sys.stderr)
            return 2
        (args.out / name).mkdir(parents=True)
        for src in chosen:
            with Image.open(src) as img:
                small = img.convert("RGB").resize((SIZE, SIZE), Image.Resampling.LANCZOS)
            small.save(args.out / name / f"{src.stem}.jpg", quality=QUALITY, optimize=True)
            total += 1
    (args.out / "README.md").write_text(README.format(
        n_classes=len(classes), per_class=PER_CLASS, n_images=total, quality=QUALITY, classes=", ".join(classes)))
    size = sum(p.stat().st_size for p in args.out.rglob("*") if p.is_file())
    print(f"wrote {total} images of {len(classes)} classes to {args.out} ({size / 1e6:.2f} MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
