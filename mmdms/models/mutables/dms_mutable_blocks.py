# Copyright (c) mmdms contributors. All rights reserved.
"""The depth of one stage of residual blocks, searched by DMS's differentiable top-k."""
from typing import List, Optional, Union

import torch
from mmrazor.models.mutables.base_mutable import BaseMutable
from mmrazor.registry import MODELS
from mmrazor.utils.typing import DumpChosen
from torch import Tensor

from .dms_topk import DMSTopkMixin
from .importance import BaseImportance


@MODELS.register_module()
class DMSMutableBlocks(BaseMutable, DMSTopkMixin):
    """Depth of a stage: one ratio over its blocks, one mask per block (paper App. A.1.1).

    Block ``i`` computes ``x + m_i * f(x)``; a removed block becomes an identity.

    Args:
        num_blocks (int): blocks of the stage that may be removed.
        min_blocks (int): blocks always kept. Defaults to 1; 0 is refused unless
            ``allow_empty=True``.
        allow_empty (bool): allow removing every block of the stage. Defaults to False.
        lambda_ (float, optional): temperature; defaults to ``lambda_scale`` x ``num_blocks``.
        lambda_scale (float): 4 for depths (paper App. A.1.1).
        importance (str | dict): ``'taylor'`` (default), ``'index'`` or a config.
        normalize (bool): rank-normalise the importance (Eq. 2).
        alias (str, optional): alias of the mutable.
    """

    def __init__(self,
                 num_blocks: int,
                 min_blocks: int = 1,
                 allow_empty: bool = False,
                 lambda_: Optional[float] = None,
                 lambda_scale: float = 4.0,
                 importance: Union[str, dict, BaseImportance, None] = 'taylor',
                 normalize: bool = True,
                 alias: Optional[str] = None,
                 **kwargs) -> None:
        super().__init__(alias=alias, **kwargs)
        if min_blocks < 1 and not allow_empty:
            raise ValueError('DMSMutableBlocks min_blocks=0 would allow removing the whole stage; '
                             'set allow_empty=True if that is intended')
        self.num_blocks = num_blocks
        self._init_topk(num_blocks, lambda_, lambda_scale, min_blocks, importance, normalize)
        # The hard mask frozen for the width-only epochs (paper App. A.1.2); -1 while searching.
        # A buffer, so a checkpoint taken in the width-only phase resumes in it.
        self.register_buffer('frozen_mask', torch.full((num_blocks,), -1.0))
        self._frozen = False

    # width-only phase ---------------------------------------------------------------------------
    @property
    def is_frozen(self) -> bool:
        return self._frozen

    def freeze(self) -> None:
        """Freeze the depth at the current hard mask (the ratio and importance stop mattering)."""
        if not self._frozen:
            self.frozen_mask.copy_(super().element_hard_mask())
            self._frozen = True

    def unfreeze(self) -> None:
        self.frozen_mask.fill_(-1.0)
        self._frozen = False

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._frozen = bool(self.frozen_mask[0] >= 0)

    def element_hard_mask(self) -> Tensor:
        if self._frozen:
            return self.frozen_mask.clone()
        return super().element_hard_mask()

    # masks --------------------------------------------------------------------------------------
    @property
    def block_masks(self) -> Tensor:
        """Soft masks of the blocks, shape (num_blocks,), differentiable in ``dms_ratio``.

        Frozen: the frozen hard mask, still connected to ``dms_ratio`` with a zero gradient so
        that data-parallel training sees every parameter used.
        """
        if self._frozen:
            return self.frozen_mask + 0.0 * self.dms_ratio
        if self.is_fixed:
            return self.element_hard_mask()
        return self.element_soft_mask()

    def block_mask(self, index: int) -> Tensor:
        """Soft mask (a 0-d tensor) of block ``index``."""
        return self.block_masks[index]

    @property
    def current_mask(self) -> Tensor:
        """Boolean selection of the kept blocks."""
        return self.element_hard_mask().bool()

    def expected_depth(self) -> Tensor:
        """Sum of the block masks: the differentiable depth."""
        return self.block_masks.sum()

    def kept_blocks(self) -> List[int]:
        """Indices of the kept blocks in network order."""
        return sorted(self.kept_elements())

    @property
    def current_choice(self) -> int:
        """Number of kept blocks."""
        return self.num_kept

    @current_choice.setter
    def current_choice(self, choice: int) -> None:
        self.set_kept(int(choice))

    def num_choices(self) -> int:
        return self.num_elements - self.min_elements + 1

    def fix_chosen(self, chosen: Optional[int] = None) -> None:
        if self.is_fixed:
            raise AttributeError('DMSMutableBlocks is already fixed; fix_chosen can be called once')
        if chosen is not None:
            self.current_choice = chosen
        self.is_fixed = True

    def dump_chosen(self) -> DumpChosen:
        return DumpChosen(chosen=self.num_kept,
                          meta=dict(max_blocks=self.num_blocks, kept_blocks=self.kept_blocks()))

    def element_weight_norms(self) -> Optional[Tensor]:
        raise RuntimeError('L1Importance is defined for widths only; use taylor or index for '
                           'DMSMutableBlocks')

    def __repr__(self) -> str:
        return f'{type(self).__name__}({self._topk_extra_repr()})'
