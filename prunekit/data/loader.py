"""Deterministic batch loaders over a :class:`SceneDataset`, DDP-aware, with no worker processes.

Batches are gathered from the in-memory uint8 tensor, moved to the device, augmented there (train only), converted
to float and normalized with the dataset's train-split mean/std.

Train loaders (``train=True``): one ``torch.Generator`` seeded from (seed, epoch) draws the epoch's permutation and
then every augmentation draw, one per position in that permutation. The permutation is the same on every rank; rank
``r`` takes positions ``r, r + world_size, ...``. The ``len % world_size`` samples at the end of the permutation are
dropped (a different few each epoch), so every rank sees the same number of samples and batches. A last batch of a
single sample is dropped too (BatchNorm cannot train on one sample); ``drop_last=True`` drops any partial batch.
Because the draws follow the permutation position, the union of all ranks' batches equals one process's epoch,
and a run resumed at epoch ``k`` replays exactly the batches an uninterrupted run would see.

Eval loaders (``train=False``): split order, no augmentation, each sample exactly once; rank ``r`` takes the ``r``-th
contiguous block (blocks differ in size by at most one sample, so batch counts may differ by one across ranks). To
evaluate under DDP, sum per-rank (correct, count) with ``all_reduce(SUM)`` after the loop; run the forward on the
unwrapped model (``ddp.module``) so no collective runs inside the loop.

    for x, y in make_loader(ds, "train", batch_size=64, seed=0, epoch=epoch, device="cuda"):
        ...
"""
from __future__ import annotations

from typing import Any, Dict, Iterator, Optional, Tuple

import torch

from ..errors import ConfigError
from .augment import NO_AUGMENT, Augment, apply_augment, draw_params
from .dataset import SceneDataset


def epoch_seed(seed: int, epoch: int) -> int:
    """A 63-bit generator seed from (seed, epoch); distinct epochs and seeds give unrelated streams."""
    mixed = (seed * 0x9E3779B97F4A7C15 + (epoch + 1) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    mixed ^= mixed >> 31
    return mixed >> 1


class SceneLoader:
    """An iterable of ``(x float32 [B,3,S,S] normalized, y int64 [B])`` on ``device``; ``len()`` is the batch count.

    Build it with :func:`make_loader`. ``set_epoch(e)`` re-seeds the shuffle and augmentation for epoch ``e``.
    """

    def __init__(self, ds: SceneDataset, split: str, batch_size: int, train: bool, seed: int, epoch: int,
                 augment: Augment, rank: int, world_size: int, device: torch.device, drop_last: Optional[bool]):
        self.ds, self.split, self.batch_size, self.train = ds, split, batch_size, train
        self.seed, self.epoch, self.augment = seed, epoch, augment
        self.rank, self.world_size, self.device, self.drop_last = rank, world_size, device, drop_last
        self._mean = torch.tensor(ds.mean, dtype=torch.float32).view(1, 3, 1, 1).to(device)
        self._std = torch.tensor(ds.std, dtype=torch.float32).view(1, 3, 1, 1).to(device)

    def set_epoch(self, epoch: int) -> None:
        """Re-seed the shuffle and augmentation for epoch ``epoch`` (the next iteration yields that epoch's batches)."""
        self.epoch = int(epoch)

    @property
    def num_samples(self) -> int:
        """Samples this rank sees per epoch (before dropping a trailing partial batch in training)."""
        n = self.ds.splits[self.split].numel()
        if self.train:
            return n // self.world_size
        return n // self.world_size + (1 if self.rank < n % self.world_size else 0)

    def _batch_sizes(self) -> list:
        full, rest = divmod(self.num_samples, self.batch_size)
        sizes = [self.batch_size] * full
        if rest and not (self.train and (self.drop_last or (self.drop_last is None and rest == 1))):
            sizes.append(rest)
        return sizes

    def __len__(self) -> int:
        return len(self._batch_sizes())

    def _plan(self) -> Tuple[torch.Tensor, Optional[Dict[str, torch.Tensor]]]:
        """This rank's dataset indices in order, and its augmentation draws (train only)."""
        index = self.ds.splits[self.split]
        if not self.train:
            n, ws = index.numel(), self.world_size
            start = self.rank * (n // ws) + min(self.rank, n % ws)
            return index[start:start + self.num_samples], None
        gen = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch))
        order = torch.randperm(index.numel(), generator=gen)
        draws = draw_params(self.augment, index.numel(), gen)  # one draw per permutation position
        positions = torch.arange(self.rank, self.num_samples * self.world_size, self.world_size)
        return index[order[positions]], {k: v[positions] for k, v in draws.items()}

    def __iter__(self) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
        rows, draws = self._plan()
        augment = self.train and self.augment != NO_AUGMENT
        start = 0
        for size in self._batch_sizes():
            take = rows[start:start + size]
            x, y = self.gather(take, {k: v[start:start + size] for k, v in draws.items()}
                               if augment and draws is not None else None)
            start += size
            yield x, y

    def gather(self, rows: torch.Tensor, draws: Optional[Dict[str, torch.Tensor]] = None
               ) -> Tuple[torch.Tensor, torch.Tensor]:
        """One normalized batch of dataset rows ``rows`` on the device, augmented with ``draws`` when given."""
        x = self.ds.images[rows].to(self.device, non_blocking=True).float().div_(255.0)
        if draws is not None:
            x = apply_augment(x, draws, self.augment)
        y = self.ds.labels[rows].to(self.device, non_blocking=True)
        return (x - self._mean) / self._std, y


def make_loader(ds: SceneDataset, split: str, batch_size: int = 64, train: Optional[bool] = None, seed: int = 0,
                epoch: int = 0, augment: bool | Augment = True, rank: int = 0, world_size: int = 1,
                device: str | torch.device = "cpu", *, drop_last: Optional[bool] = None) -> SceneLoader:
    """Batches of ``ds.splits[split]``; see the module docstring for shuffling, sharding and padding rules.

    ``train`` defaults to ``split == "train"``. ``augment``: ``True`` (all aerial augmentations), ``False``, or an
    :class:`Augment` choosing which ones; ignored when ``train`` is false.
    """
    if split not in ds.splits:
        raise ConfigError(f"split {split!r} does not exist; use one of {', '.join(ds.splits)}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size={batch_size!r} must be a positive integer (e.g. 64)")
    if isinstance(world_size, bool) or not isinstance(world_size, int) or world_size < 1:
        raise ConfigError(f"world_size={world_size!r} must be a positive integer")
    if not isinstance(rank, int) or not 0 <= rank < world_size:
        raise ConfigError(f"rank={rank!r} must be in [0, world_size={world_size})")
    if isinstance(augment, bool):
        augment = Augment() if augment else NO_AUGMENT
    elif not isinstance(augment, Augment):
        raise ConfigError(f"augment={augment!r} must be True, False or a prunekit.data.Augment")
    train = split == "train" if train is None else bool(train)
    if train and 0 < ds.splits[split].numel() < world_size:
        raise ConfigError(f"split {split!r} has {ds.splits[split].numel()} samples, fewer than world_size="
                          f"{world_size}; use fewer processes or more data")
    return SceneLoader(ds, split, batch_size, train, int(seed), int(epoch), augment if train else NO_AUGMENT,
                       rank, world_size, torch.device(device), drop_last)


def calibration_batches(ds: SceneDataset, batches: int = 4, batch_size: int = 64, device: Any = "cpu",
                        split: str = "train") -> list:
    """``batches`` un-augmented batches of ``split`` (training by default) in a fixed, class-interleaved order: what data-driven criteria score
    on (Taylor, activations, attention, PFAM maps) and what BatchNorm statistics are re-estimated from after pruning.

    The training split is stored class by class, so its first batches would hold the first few classes only (8 of
    AID's 30 in 512 images), and BN statistics re-estimated on them cost 7-10 points of validation accuracy on an
    unpruned model. Here the classes take turns (each class's images in a fixed shuffled order), so any prefix is as
    balanced as the split allows."""
    rows = calibration_order(ds, split)[:batches * batch_size]
    loader = make_loader(ds, split, batch_size=batch_size, train=False, augment=False, device=device)
    return [loader.gather(rows[i:i + batch_size]) for i in range(0, rows.numel(), batch_size)]


def calibration_order(ds: SceneDataset, split: str = "train", seed: int = 0) -> torch.Tensor:
    """The rows of ``split`` with the classes taking turns: the k-th image of every class (in a shuffle fixed by
    ``seed``) comes before any class's (k+1)-th."""
    index = ds.splits[split]
    index = index[torch.randperm(index.numel(), generator=torch.Generator().manual_seed(seed))]
    labels = ds.labels[index].long()
    turn = torch.empty_like(labels)
    for c in labels.unique():
        where = (labels == c).nonzero(as_tuple=True)[0]
        turn[where] = torch.arange(where.numel())
    order = torch.argsort(turn * (int(labels.max()) + 1) + labels, stable=True)
    return index[order]
