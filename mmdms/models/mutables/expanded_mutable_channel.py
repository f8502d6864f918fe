# Copyright (c) mmdms contributors. All rights reserved.
"""A width read expanded: each channel as ``ratio`` consecutive features of a layer's input.

A layer may read a group's channels flattened with positions, channel-major: VGG's classifier
after ``flatten`` (channel ``c`` of a ``(B, C, 7, 7)`` map is features ``49 c ... 49 c + 48``),
or mmcv's ``PatchMerging`` after ``nn.Unfold`` (Swin: channel ``c`` is features ``4 c ... 4 c +
3`` of the norm and linear that merge 2x2 patches). MMRazor's channel graph records such a
reader with an ``expand_ratio`` and asks the group's mutable for
``expand_mutable_channel(ratio)``; :class:`ExpandedMutableChannel` is DMS's answer: the group's
masks, each entry repeated ``ratio`` times, so that the reader's DMS op masks, the estimator
counts and the export slices the features of exactly the kept channels.
"""
from mmrazor.models.mutables.derived_mutable import DerivedMutable
from torch import Tensor


class ExpandedMutableChannel(DerivedMutable):
    """The masks of ``source`` (a :class:`~.dms_mutable_channel.DMSMutableChannel`), each
    channel's entry repeated ``ratio`` times (``repeat_interleave``: channel-major features).

    A derived mutable (MMRazor's kind, so that its units accept it where a layer's input and
    output containers are one): it has no ratio or importance of its own and reads ``source``
    at every call.

    Args:
        source: the group's mutable.
        ratio (int): features per channel.
    """

    def __init__(self, source, ratio: int) -> None:
        if int(ratio) != ratio or ratio < 1:
            raise ValueError(
                f'{type(source).__name__}({source.num_channels}) is read with {ratio} features '
                'per channel: DMS expands a width by whole features per channel only')
        ratio = int(ratio)
        super().__init__(choice_fn=lambda: source.current_choice * ratio,
                         mask_fn=lambda: source.current_mask.repeat_interleave(ratio),
                         source_mutables=[source])
        object.__setattr__(self, 'source', source)  # not a submodule: the unit owns it
        self.ratio = ratio

    def _expand(self, mask: Tensor) -> Tensor:
        return mask.repeat_interleave(self.ratio)

    @property
    def num_channels(self) -> int:
        return self.source.num_channels * self.ratio

    @property
    def soft_mask(self) -> Tensor:
        return self._expand(self.source.soft_mask)

    @property
    def hard_mask(self) -> Tensor:
        return self._expand(self.source.hard_mask)

    def __repr__(self) -> str:
        return f'{type(self).__name__}({self.source!r}, ratio={self.ratio})'
