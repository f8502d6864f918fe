# Copyright (c) mmdms contributors. All rights reserved.
"""Structures of a DMS search space as plain counts: ``{mutable name: kept elements}`` for every
width (``width:<key>``) and depth (``depth:<key>``) of ``algorithm.space``.

The encoding DMS's own search ends at, read and set through the mutables' ``set_kept`` (which
elements are kept is their importance ranking), so that a structure found another way (sampled
by a one-shot supernet, evolved) exports, retrains and is counted exactly as a DMS one.
"""
import math
from typing import Dict, Optional, Tuple

import torch
import torch.nn as nn

Structure = Dict[str, int]


def structure_mutables(algorithm: nn.Module) -> Dict[str, nn.Module]:
    """Every searched width and depth of ``algorithm.space`` by its structure name."""
    space = algorithm.space
    named = {f'width:{key}': group.mutable for key, group in space.widths.items()}
    named.update({f'depth:{key}': stage.mutable for key, stage in space.stages.items()})
    return named


def get_structure(algorithm: nn.Module) -> Structure:
    """The structure the hard masks keep now."""
    return {name: int(m.num_kept) for name, m in structure_mutables(algorithm).items()}


def set_structure(algorithm: nn.Module, structure: Structure) -> None:
    """Keep ``structure[name]`` elements of every mutable.

    Raises:
        KeyError: ``structure`` misses a mutable or names one the space does not have.
    """
    mutables = structure_mutables(algorithm)
    if set(structure) != set(mutables):
        missing, unknown = sorted(set(mutables) - set(structure)), \
            sorted(set(structure) - set(mutables))
        raise KeyError(f'set_structure: the structure does not fit the search space: missing '
                       f'{missing}, unknown {unknown}')
    for name, mutable in mutables.items():
        mutable.set_kept(int(structure[name]))


def smallest_kept(name: str, mutable: nn.Module, min_width_fraction: float = 0.0) -> int:
    """The fewest elements a structure keeps of ``mutable``: its minimum, and for a width
    (``name`` starting ``width:``) at least ``ceil(min_width_fraction * N)``."""
    low = mutable.min_elements
    if name.startswith('width:') and min_width_fraction > 0:
        low = max(low, math.ceil(min_width_fraction * mutable.num_elements))
    return min(low, mutable.num_elements)


def sample_structure(algorithm: nn.Module, kind: str = 'random',
                     generator: Optional[torch.Generator] = None,
                     min_width_fraction: float = 0.0) -> Structure:
    """``'max'`` (every element), ``'min'`` (the fewest, :func:`smallest_kept`) or ``'random'``
    (a kept count drawn uniformly between the two for each mutable)."""
    if kind not in ('max', 'min', 'random'):
        raise ValueError(f"sample_structure: kind must be 'max', 'min' or 'random', got {kind!r}")
    if not 0 <= min_width_fraction <= 1:
        raise ValueError(f'sample_structure: min_width_fraction must be in [0, 1], got '
                         f'{min_width_fraction}')
    structure = {}
    for name, m in structure_mutables(algorithm).items():
        low, high = smallest_kept(name, m, min_width_fraction), m.num_elements
        if kind == 'max':
            structure[name] = high
        elif kind == 'min':
            structure[name] = low
        else:
            structure[name] = int(torch.randint(low, high + 1, (1, ), generator=generator))
    return structure


def structure_key(structure: Structure) -> Tuple:
    """A hashable form of ``structure``."""
    return tuple(sorted(structure.items()))
