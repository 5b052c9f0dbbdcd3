"""sod_lightning: train, compare and ship salient object detection models (Lightning + Hydra)."""
