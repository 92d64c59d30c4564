"""Record the data split in a checkpoint written before checkpoints recorded it (e.g. a compare_criteria base).

    .venv/bin/python benchmarks/resave_with_split.py OLD.safetensors NEW.safetensors DATA [--seed S]

The split is the one the old file was trained on: ``load_dataset(DATA, seed=S)`` with the default fractions (what
``compare_criteria.py`` trains its bases on, S = its --base-seed). Afterwards ``prunekit prune/eval/sensitivity``
reuse that split whatever their ``--seed``.
"""
from __future__ import annotations

import argparse

import prunekit
from prunekit.data import load_dataset
from prunekit.data import data_section


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("old")
    p.add_argument("new")
    p.add_argument("data")
    p.add_argument("--seed", type=int, default=0, help="the split seed the old checkpoint was trained with")
    p.add_argument("--image-size", type=int, default=64)
    args = p.parse_args()
    section = data_section(load_dataset(args.data, image_size=args.image_size, seed=args.seed))
    prunekit.save(prunekit.load(args.old), args.new, data=section)
    print(f"{args.new}: split seed {section['split_seed']}, test {section['test_frac']}, val {section['val_frac']}")


if __name__ == "__main__":
    main()
