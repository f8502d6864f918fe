# Copyright (c) mmdms contributors. All rights reserved.
"""One searchable width: a channel-dependency group, the heads of an attention, or a head dim."""
from typing import Callable, List, Optional, Union

import torch
from mmrazor.models.mutables import BaseMutableChannel
from mmrazor.registry import MODELS
from mmrazor.utils.typing import DumpChosen
from torch import Tensor

from .dms_topk import DMSTopkMixin
from .expanded_mutable_channel import ExpandedMutableChannel
from .importance import BaseImportance


@MODELS.register_module()
class DMSMutableChannel(BaseMutableChannel, DMSTopkMixin):
    """A width searched by DMS's differentiable top-k.

    Consumers multiply their input channels by :attr:`soft_mask` (paper App. A.1.1). With
    ``step > 1`` contiguous groups of ``step`` channels share one importance and one mask
    (the coarse-grained space); the last group may be smaller.

    Args:
        num_channels (int): the width ``N`` of the supernet.
        step (int): channels per element. Defaults to 1 (fine-grained).
        min_width (int): channels always kept, at least 1 (enough whole steps are kept to reach
            it even if the short last step is among them).
        lambda_ (float, optional): temperature; defaults to ``lambda_scale`` x number of elements.
        lambda_scale (float): 1 for widths (paper), 4 for attention heads.
        importance (str | dict): ``'taylor'`` (default), ``'l1'``, ``'index'`` or a config.
        normalize (bool): rank-normalise the importance (Eq. 2). ``False`` is the Table 12
            ablation.
        alias (str, optional): alias of the mutable.
    """

    def __init__(self,
                 num_channels: int,
                 step: int = 1,
                 min_width: int = 1,
                 lambda_: Optional[float] = None,
                 lambda_scale: float = 1.0,
                 importance: Union[str, dict, BaseImportance, None] = 'taylor',
                 normalize: bool = True,
                 alias: Optional[str] = None,
                 **kwargs) -> None:
        super().__init__(num_channels, alias=alias, **kwargs)
        if step < 1:
            raise ValueError(f'DMSMutableChannel step must be >= 1, got {step}')
        if not 1 <= min_width <= num_channels:
            raise ValueError(f'DMSMutableChannel min_width must be in [1, {num_channels}] so that '
                             f'no layer is left without channels, got {min_width}')
        self.step = step
        self.min_width = min_width
        num_groups = -(-num_channels // step)
        # Worst case: the kept groups include the short last group, so count it first.
        last_size = num_channels - (num_groups - 1) * step
        min_groups = 1 + -(-max(0, min_width - last_size) // step)
        self._init_topk(num_groups, lambda_, lambda_scale, min_groups, importance, normalize)
        #: Callable returning each channel's summed absolute weight, for ``L1Importance``; the
        #: DMSChannelUnit sets it from the layers producing the group.
        self.weight_norm_source: Optional[Callable[[], Tensor]] = None

    # group <-> channel ------------------------------------------------------------------------
    def _to_channels(self, per_group: Tensor) -> Tensor:
        if self.step == 1:
            return per_group
        return per_group.repeat_interleave(self.step)[:self.num_channels]

    def group_channels(self, group: int) -> List[int]:
        """The channel indices of element ``group``."""
        start = group * self.step
        return list(range(start, min(start + self.step, self.num_channels)))

    # masks ------------------------------------------------------------------------------------
    @property
    def soft_mask(self) -> Tensor:
        """Soft mask over the ``N`` channels, differentiable in ``dms_ratio``."""
        if self.is_fixed:
            return self.hard_mask
        return self._to_channels(self.element_soft_mask())

    @property
    def hard_mask(self) -> Tensor:
        """0/1 float mask over the channels: kept iff the element's ``m >= 0.5``."""
        return self._to_channels(self.element_hard_mask())

    @property
    def current_mask(self) -> Tensor:
        """Boolean channel selection (mmrazor's interface for dynamic ops and export)."""
        return self.hard_mask.bool()

    @property
    def activated_channels(self) -> int:
        return int(self.hard_mask.sum().item())

    def expand_mutable_channel(self, expand_ratio) -> ExpandedMutableChannel:
        """This width as read by a layer that sees each channel as ``expand_ratio``
        consecutive features (MMRazor's interface; e.g. a linear after ``flatten``)."""
        expanded = self.__dict__.setdefault('_expanded', {})
        if expand_ratio not in expanded:  # one object per ratio: a layer's in and out containers
            expanded[expand_ratio] = ExpandedMutableChannel(self, expand_ratio)  # may be one
        return expanded[expand_ratio]

    def expected_width(self) -> Tensor:
        """Sum of the soft mask over the channels: the differentiable width."""
        return self.soft_mask.sum()

    def kept_channel_indices(self) -> List[int]:
        """Indices of the kept channels, most important element first."""
        return [c for g in self.kept_elements() for c in self.group_channels(g)]

    # choice (mmrazor's mutable interface) -----------------------------------------------------
    @property
    def current_choice(self) -> int:
        """Number of channels kept by the hard mask."""
        return self.activated_channels

    @current_choice.setter
    def current_choice(self, choice: int) -> None:
        """Keep ``choice`` channels (rounded up to whole steps)."""
        if isinstance(choice, Tensor):
            choice = int(choice.sum().item()) if choice.dtype == torch.bool else int(choice.item())
        if not isinstance(choice, int):
            raise TypeError(f'DMSMutableChannel choice is a channel count, got {choice!r}')
        self.set_kept(-(-choice // self.step))

    def num_choices(self) -> int:
        return self.num_elements - self.min_elements + 1

    def export_chosen(self) -> int:
        return self.activated_channels

    def dump_chosen(self) -> DumpChosen:
        meta = dict(max_channels=self.num_channels, step=self.step,
                    kept_indices=self.kept_channel_indices())
        return DumpChosen(chosen=self.export_chosen(), meta=meta)

    # importance -------------------------------------------------------------------------------
    def element_weight_norms(self) -> Optional[Tensor]:
        """Per-element L1 norm from :attr:`weight_norm_source` (summed within a step)."""
        if self.weight_norm_source is None:
            raise RuntimeError('L1Importance needs DMSMutableChannel.weight_norm_source, a '
                               'callable returning per-channel weight norms; the DMSMutator sets '
                               'it from the layers of the channel group')
        norms = self.weight_norm_source().detach().float()
        if self.step == 1:
            return norms
        padded = norms.new_zeros(self.num_elements * self.step)
        padded[:self.num_channels] = norms
        return padded.view(self.num_elements, self.step).sum(dim=1)

    def __repr__(self) -> str:
        return f'{type(self).__name__}(num_channels={self.num_channels}, step={self.step}, ' \
               f'{self._topk_extra_repr()})'
