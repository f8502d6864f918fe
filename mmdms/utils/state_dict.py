# Copyright (c) mmdms contributors. All rights reserved.
"""Loading a model's own state dict strictly, when its load hooks drop keys it rebuilds.

mmpretrain's ``SwinTransformerV2`` registers a load pre-hook that deletes every
``relative_position_index`` and ``relative_coords_table`` from the state dict it is given (it
rebuilds them from its window size, so that checkpoints of other window sizes load). A strict
``load_state_dict`` of its own state dict then fails ("Missing key(s) in state_dict:
...relative_coords_table"), and the export of a searched Swin-V2 failed there.

Some modules recompute buffers from their input in their forward (:data:`RECOMPUTED_BUFFERS`:
EVA-02's rotary embedding re-registers ``freqs_cos`` / ``freqs_sin`` for each new patch
resolution). A model that ran on another input size than the one it was built for holds them
at another shape ("size mismatch for backbone.rope.freqs_cos: ... [25, 64] ... [576, 64]"):
those keys keep the loading model's own values, which its forward recomputes alike.
"""
from typing import Mapping, Set

import torch
import torch.nn as nn


#: Import path of a module type -> the buffers its forward recomputes from its input.
RECOMPUTED_BUFFERS = {
    'mmpretrain.models.utils.position_encoding.RotaryEmbeddingFast': ('freqs_cos', 'freqs_sin'),
}


def recomputed_buffer_keys(model: nn.Module) -> Set[str]:
    """State-dict keys of ``model``'s buffers that their module's forward recomputes."""
    keys = set()
    for name, module in model.named_modules(remove_duplicate=False):
        cls = type(module)
        for buffer in RECOMPUTED_BUFFERS.get(f'{cls.__module__}.{cls.__qualname__}', ()):
            keys.add(f'{name}.{buffer}' if name else buffer)
    return keys


def load_state_dict_strictly(model: nn.Module, state: Mapping[str, torch.Tensor]) -> None:
    """``model.load_state_dict(state, strict=True)``, except that a key of ``state`` that one of
    the model's load hooks drops is accepted where the model already holds that very value,
    and a recomputed buffer (:data:`RECOMPUTED_BUFFERS`) of another shape keeps the model's.

    Raises:
        RuntimeError: as a strict load does, naming the unexpected keys, the missing keys (not
            in ``state``, or dropped with another value than the model's) and, via
            ``load_state_dict``, the mis-shaped ones.
    """
    own = model.state_dict()
    recomputed = {k for k in recomputed_buffer_keys(model) & set(state) & set(own)
                  if tuple(state[k].shape) != tuple(own[k].shape)}
    state = {k: v for k, v in state.items() if k not in recomputed}
    missing, unexpected = model.load_state_dict(state, strict=False)
    own = model.state_dict()
    missing = [k for k in missing if k not in recomputed and
               (k not in state or not _same(own.get(k), state[k]))]
    if missing or unexpected:
        parts = []
        if unexpected:
            parts.append('Unexpected key(s) in state_dict: ' + ', '.join(unexpected))
        if missing:
            parts.append('Missing key(s) in state_dict: ' + ', '.join(missing))
        raise RuntimeError(f'Error(s) in loading state_dict for {type(model).__name__}: ' +
                           '; '.join(parts))


def _same(value, expected) -> bool:
    if not isinstance(value, torch.Tensor) or not isinstance(expected, torch.Tensor):
        return value is expected
    return value.shape == expected.shape and torch.equal(value.cpu(), expected.cpu())
