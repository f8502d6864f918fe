# Copyright (c) mmdms contributors. All rights reserved.
"""Set a DMS search model to a channel selection made elsewhere (e.g. by another pruning
library), so that the project's export writes it as a subnet and retrains it alike."""
from typing import Dict, Sequence

import torch
import torch.nn as nn


def width_producers(algorithm: nn.Module) -> Dict[str, str]:
    """Each width group's key -> the layer whose output channels it is (the first layer of the
    group: the tracer names the group after it)."""
    return {key: group.layers[0] for key, group in algorithm.space.widths.items()}


def set_kept_channels(algorithm: nn.Module, kept: Dict[str, Sequence[int]]) -> None:
    """Keep exactly the output channels ``kept[layer]`` of every searched width, and every block.

    Args:
        algorithm: a DMS search model (its ``space``).
        kept: the producing layer's name (``width_producers``) -> the indices of its output
            channels to keep. Every width group needs an entry; a group of ``step`` > 1 needs
            whole steps.

    Raises:
        KeyError: a width group has no entry (the message names it and the known layers).
        ValueError: indices out of range, repeated, fewer than the group's minimum, or not whole
            steps of a coarse-grained group.
    """
    producers = width_producers(algorithm)
    missing = sorted(layer for layer in producers.values() if layer not in kept)
    if missing:
        raise KeyError(f'set_kept_channels: no kept channels for the width(s) produced by '
                       f'{", ".join(missing)}; the widths are produced by '
                       f'{", ".join(sorted(producers.values()))}')
    for key, layer in producers.items():
        mutable = algorithm.space.widths[key].mutable
        indices = sorted(int(i) for i in kept[layer])
        if len(set(indices)) != len(indices) or not indices or indices[0] < 0 or \
                indices[-1] >= mutable.num_channels:
            raise ValueError(f"set_kept_channels: the kept channels of '{layer}' must be distinct "
                             f'indices in [0, {mutable.num_channels}), got {indices}')
        groups = sorted({i // mutable.step for i in indices})
        if sum(len(mutable.group_channels(g)) for g in groups) != len(indices):
            raise ValueError(f"set_kept_channels: '{layer}' is searched in steps of "
                             f'{mutable.step} channels; keep whole steps')
        if len(groups) < mutable.min_elements:
            raise ValueError(f"set_kept_channels: '{layer}' keeps {len(groups)} element(s), "
                             f'fewer than its minimum {mutable.min_elements}')
        importance = torch.zeros_like(mutable.importance)
        importance[groups] = 1.0  # kept elements rank above the others (ties by index)
        with torch.no_grad():
            mutable.importance.copy_(importance)
        mutable.set_kept(len(groups))
        if sorted(mutable.kept_channel_indices()) != indices:
            raise RuntimeError(f"set_kept_channels: '{layer}' keeps "
                               f'{sorted(mutable.kept_channel_indices())}, not {indices}')
    for mutable in algorithm.space.depth_mutables():
        mutable.set_kept(mutable.num_elements)


@torch.no_grad()
def set_random_structure(algorithm: nn.Module, generator: torch.Generator) -> None:
    """A seeded random structure: for every width and depth, a random importance and a random
    kept count between its minimum and all (what the exactness checks export)."""
    for mutable in algorithm.dms_mutables():
        mutable.importance.copy_(torch.rand(mutable.importance.shape, generator=generator))
        mutable.set_kept(int(torch.randint(mutable.min_elements, mutable.num_elements + 1,
                                           (1, ), generator=generator)))
