"""Run by tests/test_train.py under torchrun: train 2 epochs with DDP, each rank saves its final weights."""
import os
import sys
from pathlib import Path

import torch

from prunekit.data import load_dataset
from prunekit.models import create_model
from prunekit.storage import checkpoint as ckpt
from prunekit.train import TrainConfig, fit

folder, out = sys.argv[1], Path(sys.argv[2])
rank = int(os.environ["RANK"])
torch.manual_seed(0)
ds = load_dataset(folder, image_size=16, seed=0, val_frac=0.2)
model = create_model("vgg_tiny", num_classes=len(ds.classes))
if rank == 0:
    ckpt.save(model, out / "start.safetensors")
res = fit(model, ds, TrainConfig(epochs=2, batch_size=4), device="cpu", out_dir=out / "run", progress=False)
ckpt.save(res.model, out / f"rank{rank}.safetensors")
