"""``python -m sod_lightning``: train, validate and test (see :mod:`sod_lightning.train`)."""

from sod_lightning.train import main

if __name__ == "__main__":
    main()
