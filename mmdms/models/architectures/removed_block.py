# Copyright (c) mmdms contributors. All rights reserved.
"""What a residual block removed by the depth search becomes in the exported subnet."""
from typing import Optional, Union

from torch import Tensor, nn
from mmrazor.registry import MODELS

#: Attribute values a removed block keeps from the block it replaces: plain settings that the
#: parent's code may read (VAN reads ``block.out_channels`` of a stage's last block).
_PLAIN = (bool, int, float, str, type(None))


def _plain(value) -> bool:
    if isinstance(value, (tuple, list)):
        return all(_plain(v) for v in value)
    return isinstance(value, _PLAIN)


@MODELS.register_module()
class RemovedBlock(nn.Identity):
    """An identity in place of a removed identity-residual block ``g(x) = x + f(x)``.

    Returns its first input unchanged, whatever else the parent passes to the block (the depth
    mask of the search computes ``x + m (g(x) - x)``, i.e. ``x`` when ``m = 0``); with
    ``returns_args``, in place of a block ``g(x, *rest) = (x + f(x), *rest)``, it returns
    ``(x, *rest)`` (MViT-V2's blocks return ``(x, out_size)``). Built with
    :meth:`of`, it keeps the removed block's plain attributes (numbers, strings, tuples of them:
    ``out_channels``, ``embed_dims``), which a parent's forward may read; reading anything else
    of the removed block is one error naming it.
    """

    #: return ``(x, *further positional arguments)``, not ``x`` (a class default: a removed
    #: block pickled before the attribute existed returns ``x``)
    returns_args = False

    def __init__(self, removed_type: str = '', name: str = '', returns_args: bool = False,
                 **attributes) -> None:
        super().__init__()
        self.removed_type = removed_type
        self.removed_name = name
        self.returns_args = returns_args
        for key, value in attributes.items():
            setattr(self, key, value)

    @classmethod
    def of(cls, block: nn.Module, name: str = '', returns_args: bool = False) -> 'RemovedBlock':
        """The removed block ``block`` (named ``name``), keeping its plain attributes;
        ``returns_args``: ``block`` returns ``(x, *further positional arguments)``."""
        kept = {key: value for key, value in vars(block).items()
                if not key.startswith('_') and key not in ('training', 'returns_args')
                and _plain(value)}
        return cls(type(block).__name__, name, returns_args, **kept)

    def forward(self, x: Tensor, *args, **kwargs) -> Union[Tensor, tuple]:
        return (x, *args) if self.returns_args else x

    def __getattr__(self, key: str):
        try:
            return super().__getattr__(key)
        except AttributeError:
            removed_type = self.__dict__.get('removed_type')  # none while being unpickled
            what = f"'{self.__dict__.get('removed_name')}' ({removed_type})" if removed_type \
                else 'this block'
            raise AttributeError(
                f'{what} was removed by the depth search and is an identity (RemovedBlock): '
                f'it has no attribute {key!r}. The code that reads it needs a family adapter '
                'with a static rule (mmdms.models.adapters.FamilyAdapter.static_rule), or keep '
                "the block's type out of the depth search (DMSMutator(block_types="
                "{'<import path>': '<attribute true for searchable blocks>'}))") from None

    def extra_repr(self) -> str:
        return f'removed {self.removed_type}' if self.removed_type else ''
