"""Data: the SOD DataModule, folder and synthetic sets, image I/O and augmentation."""

from sod_lightning.data.datamodule import SODDataModule
from sod_lightning.data.folders import FolderDataset, pair_files, resolve_set
from sod_lightning.data.synthetic import SyntheticSOD

__all__ = ["FolderDataset", "SODDataModule", "SyntheticSOD", "pair_files", "resolve_set"]
