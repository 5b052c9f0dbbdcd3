"""The one LightningDataModule for every data source: synthetic, folders and the field's standard layouts."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import DataLoader, Dataset

from sod_lightning.config import to_plain
from sod_lightning.data.augment import Normalize, build_augmentation
from sod_lightning.data.folders import FolderDataset, pair_files, resolve_set
from sod_lightning.data.synthetic import SyntheticSOD

log = logging.getLogger(__name__)


def collate(items: list[dict]) -> dict[str, Any]:
    """Stack images and input-size masks; keep original-size masks (mixed sizes) and names as lists."""
    batch: dict[str, Any] = {
        "image": torch.stack([it["image"] for it in items]),
        "mask": torch.stack([it["mask"] for it in items]),
        "name": [it["name"] for it in items],
    }
    if "mask_orig" in items[0]:
        batch["mask_orig"] = [it["mask_orig"] for it in items]
    return batch


def _pair(value: int | Sequence[int], key: str) -> tuple[int, int]:
    if isinstance(value, int):
        return value, value
    value = tuple(int(v) for v in value)
    if len(value) != 2:
        raise ValueError(f"{key} must be an int or [height, width], got {list(value)}.")
    return value  # type: ignore[return-value]


class SODDataModule(pl.LightningDataModule):
    """Train, validation and named test sets for salient object detection.

    Sources are either ``synthetic`` (procedural, see :mod:`sod_lightning.data.synthetic`) or folder sets, each
    ``{name, image_dir, mask_dir}`` or ``{name, root, layout}`` (layouts: ``duts``, ``images_masks``,
    ``image_gt``, ``split_label``, ``auto``). Images are resized to ``image_size`` on the CPU; augmentation and
    normalisation run on the batch's device in :meth:`on_after_batch_transfer`. Validation and test batches carry
    each mask at its original resolution (``mask_orig``) so metrics are computed there.

    Args:
        synthetic: ``{train_size, val_size, test_size, seed}`` to use the procedural data (then the folder
            arguments must be empty).
        train: folder sets for training (concatenated).
        val: folder sets for validation (concatenated); if empty, ``val_split`` of the training pairs is held out.
        test: folder sets for testing, each reported separately as ``test/<name>/<metric>``.
        val_split: fraction of the training pairs held out for validation when ``val`` is empty.
        image_size: model input ``(H, W)`` (an int for square) for every stage.
        crop_size: training crop ``(H, W)`` taken after resizing to ``image_size``; ``None`` trains at
            ``image_size``.
        augment: keyword arguments of :func:`~sod_lightning.data.augment.build_augmentation`, or ``None`` for none.
        normalization: ``imagenet``, ``imagenet_max`` (official U^2-Net/BASNet test-time), ``caffe`` (VGG BGR
            mean pixel) or ``none``.
        batch_size: training batch size; evaluation uses ``eval_batch_size`` (default the same).
        num_workers: DataLoader workers.
        on_bad_sample: ``error`` or ``skip`` (log and leave out unpaired, unreadable or mis-sized files).
        seed: seed for the validation hold-out split.
    """

    def __init__(
        self,
        synthetic: Mapping | None = None,
        train: Sequence[Mapping] = (),
        val: Sequence[Mapping] = (),
        test: Sequence[Mapping] = (),
        val_split: float = 0.1,
        image_size: int | Sequence[int] = 96,
        crop_size: int | Sequence[int] | None = None,
        augment: Mapping | None = None,
        normalization: str = "imagenet",
        batch_size: int = 16,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        on_bad_sample: str = "error",
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters({k: to_plain(v) for k, v in locals().items() if k not in ("self", "__class__")})
        self.image_size = _pair(image_size, "data.image_size")
        self.crop_size = _pair(crop_size, "data.crop_size") if crop_size is not None else None
        if self.crop_size and (self.crop_size[0] > self.image_size[0] or self.crop_size[1] > self.image_size[1]):
            raise ValueError(
                f"data.crop_size {list(self.crop_size)} is larger than data.image_size {list(self.image_size)}; "
                "the crop is taken from the resized image, so it must fit inside it."
            )
        if synthetic and (train or val or test):
            raise ValueError(
                "data.synthetic and folder sets (data.train/val/test) are both set; use one source: "
                "data=synthetic, or a folder config such as data=folders with data.synthetic=null."
            )
        if not synthetic and not train and not test:
            raise ValueError(
                "No data: set data.synthetic (data=synthetic) or give folder sets in data.train and data.test "
                "(see conf/data/folders.yaml)."
            )
        if on_bad_sample not in ("error", "skip"):
            raise ValueError(f"data.on_bad_sample='{on_bad_sample}' is unknown; use error or skip.")
        self.normalize = Normalize(normalization)
        self.augment = build_augmentation(self.crop_size or self.image_size, **augment) if augment else None
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None
        self.test_sets: dict[str, Dataset] = {}
        self._test_names = [s["name"] for s in test] if not synthetic else ["synthetic"]

    @property
    def input_size(self) -> tuple[int, int]:
        """The model's evaluation input size ``(H, W)``."""
        return self.image_size

    @property
    def train_input_size(self) -> tuple[int, int]:
        """The model's training input size ``(H, W)`` (the crop when one is set)."""
        return self.crop_size or self.image_size

    @property
    def test_set_names(self) -> list[str]:
        """Test set names, in test dataloader order."""
        return list(self._test_names)

    def _folder(self, specs: Sequence[Mapping], split: str, key: str, keep_original: bool) -> list[FolderDataset]:
        sets = []
        for i, spec in enumerate(specs):
            s = resolve_set(spec, split, f"{key}[{i}]")
            pairs = pair_files(s, f"{key}[{i}]", self.hparams.on_bad_sample)
            sets.append(FolderDataset(pairs, self.image_size, keep_original=keep_original, name=s.name))
            log.info("%s: set '%s' with %d pairs from %s", key, s.name, len(pairs), s.image_dir)
        return sets

    def setup(self, stage: str | None = None) -> None:
        hp = self.hparams
        if hp.synthetic:
            syn = dict(hp.synthetic)
            unknown = set(syn) - {"train_size", "val_size", "test_size", "seed"}
            if unknown:
                raise ValueError(f"data.synthetic has unknown keys {sorted(unknown)}; use train_size, val_size, "
                                 "test_size, seed.")
            seed = int(syn.get("seed", 0))
            self.train_set = SyntheticSOD(int(syn.get("train_size", 800)), self.image_size, seed, "train")
            self.val_set = SyntheticSOD(int(syn.get("val_size", 100)), self.image_size, seed, "val", keep_original=True)
            self.test_sets = {"synthetic": SyntheticSOD(int(syn.get("test_size", 200)), self.image_size, seed, "test",
                                                        keep_original=True)}
            return
        if stage in (None, "fit", "validate"):
            train_sets = self._folder(hp.train, "train", "data.train", keep_original=False)
            if not train_sets and stage in (None, "fit"):
                raise ValueError("data.train is empty: give at least one training set to fit.")
            if hp.val:
                val_sets = self._folder(hp.val, "test", "data.val", keep_original=True)
                self.val_set = torch.utils.data.ConcatDataset(val_sets)
                self.train_set = torch.utils.data.ConcatDataset(train_sets) if train_sets else None
            elif train_sets:
                self.train_set, self.val_set = self._hold_out(train_sets)
        if stage in (None, "test"):
            self.test_sets = {ds.name: ds for ds in self._folder(hp.test, "test", "data.test", keep_original=True)}
            self._test_names = list(self.test_sets)

    def _hold_out(self, train_sets: list[FolderDataset]) -> tuple[Dataset, Dataset]:
        """Split ``val_split`` of the training pairs off, deterministically by ``seed``."""
        pairs = [p for ds in train_sets for p in ds.pairs]
        n_val = max(1, round(len(pairs) * self.hparams.val_split))
        if not 0 < self.hparams.val_split < 1 or n_val >= len(pairs):
            raise ValueError(
                f"data.val_split={self.hparams.val_split} leaves no training or no validation pairs out of "
                f"{len(pairs)}; use a fraction in (0, 1) or give data.val sets."
            )
        order = torch.randperm(len(pairs), generator=torch.Generator().manual_seed(self.hparams.seed)).tolist()
        val_pairs = [pairs[i] for i in sorted(order[:n_val])]
        train_pairs = [pairs[i] for i in sorted(order[n_val:])]
        return (FolderDataset(train_pairs, self.image_size, name="train"),
                FolderDataset(val_pairs, self.image_size, keep_original=True, name="val"))

    def _loader(self, ds: Dataset, train: bool) -> DataLoader:
        hp = self.hparams
        sampler = None
        trainer = getattr(self, "trainer", None)
        if not train and trainer is not None and trainer.world_size > 1:
            # Lightning's default DistributedSampler pads the last shard with repeated samples, which would count
            # those images twice in the metrics. This sampler gives every image to exactly one rank.
            sampler = UnrepeatedDistributedSampler(ds, num_replicas=trainer.world_size, rank=trainer.global_rank,
                                                   shuffle=False)
        return DataLoader(
            ds,
            batch_size=hp.batch_size if train else (hp.eval_batch_size or hp.batch_size),
            shuffle=train and sampler is None,
            sampler=sampler,
            drop_last=train and len(ds) > hp.batch_size,
            num_workers=hp.num_workers,
            persistent_workers=hp.num_workers > 0,
            collate_fn=collate,
            pin_memory=torch.cuda.is_available(),
        )

    def train_dataloader(self) -> DataLoader:
        if self.train_set is None:
            raise ValueError("No training data: set data.train (or data.synthetic) to fit.")
        return self._loader(self.train_set, train=True)

    def val_dataloader(self) -> DataLoader:
        if self.val_set is None:
            raise ValueError("No validation data: set data.val, or data.val_split to hold out training pairs.")
        return self._loader(self.val_set, train=False)

    def test_dataloader(self) -> list[DataLoader]:
        if not self.test_sets:
            raise ValueError("No test data: set data.test to a list of {name, image_dir, mask_dir} sets.")
        return [self._loader(self.test_sets[name], train=False) for name in self._test_names]

    def predict_dataloader(self) -> list[DataLoader]:
        return self.test_dataloader()

    def on_after_batch_transfer(self, batch: dict, dataloader_idx: int) -> dict:
        """Augment (training only) and normalise on the batch's device."""
        trainer = getattr(self, "trainer", None)
        image, mask = batch["image"], batch["mask"]
        if self.augment is not None and trainer is not None and trainer.training:
            self.augment.to(image.device)
            image, mask = self.augment(image, mask)
            mask = mask.clamp(0, 1)
        elif trainer is not None and trainer.training and self.crop_size:
            image, mask = _center_crop(image, self.crop_size), _center_crop(mask, self.crop_size)
        batch["image"] = self.normalize.to(image.device)(image)
        batch["mask"] = mask
        return batch


def _center_crop(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    top, left = (x.shape[-2] - size[0]) // 2, (x.shape[-1] - size[1]) // 2
    return x[..., top:top + size[0], left:left + size[1]]
