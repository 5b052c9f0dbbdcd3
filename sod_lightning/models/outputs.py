"""The output container shared by every model."""

from __future__ import annotations

from typing import Mapping

from torch import Tensor


class SideOutputs(list):
    """A list of logit maps (final prediction first) plus named auxiliary tensors.

    Models whose loss needs more than the logit maps (CLN's context map, for instance) return this instead of a
    plain list; everything that only reads predictions treats it as the list it is.

    Example:
        >>> import torch
        >>> out = SideOutputs([torch.zeros(1, 1, 8, 8)], aux={"context_map": torch.zeros(1, 4, 4)})
        >>> len(out), tuple(out.aux)
        (1, ('context_map',))
    """

    def __init__(self, logits: list[Tensor] | tuple[Tensor, ...], aux: Mapping[str, Tensor] | None = None) -> None:
        super().__init__(logits)
        self.aux: dict[str, Tensor] = dict(aux or {})
