# Copyright (c) mmdms contributors. All rights reserved.
"""Uniformly scaled baselines of a search space: the comparison DMS is judged against."""
from typing import Callable, Tuple

import torch.nn as nn


def _keep_fraction(mutable, fraction: float) -> None:
    kept = round(fraction * mutable.num_elements)
    mutable.set_kept(min(mutable.num_elements, max(mutable.min_elements, kept, 1)))


def bisect_to_target(cost_at: Callable[[float], float], high: float, target: float,
                     tolerance: float, steps: int) -> Tuple[float, float]:
    """Bisect ``x`` in ``[0, high]`` (``cost_at`` increasing in ``x``, and setting the
    structure it counts) towards ``cost_at(x) == target``, stopping within half the
    ``tolerance``; the structure of the closest ``x`` is set again on return.

    Returns:
        tuple: the closest ``x`` and its cost (the caller checks it against ``tolerance``).
    """
    low, best = 0.0, None
    for _ in range(steps):
        middle = (low + high) / 2
        cost = cost_at(middle)
        if best is None or abs(cost - target) < abs(best[1] - target):
            best = (middle, cost)
        if abs(cost - target) <= tolerance * target / 2:
            break
        low, high = (middle, high) if cost < target else (low, middle)
    return best[0], cost_at(best[0])


def uniform_structure(algorithm: nn.Module, target: float, resource: str = 'macs',
                      scale_depth: bool = False, tolerance: float = 0.02,
                      steps: int = 40) -> float:
    """Keep the same fraction of every width (and, with ``scale_depth``, of every stage's
    blocks) of a DMS search model, bisecting the fraction until the exact (hard-mask) cost is
    within ``tolerance`` of ``target``.

    With ``scale_depth`` a block is a large step of the cost, so one fraction for both can
    jump over the tolerance band (the Fashion-MNIST MobileNetV2-style supernet at half its
    MACs); the depths then keep the fraction that came closest and the widths alone are
    bisected again.

    Returns:
        float: the cost of the structure set on ``algorithm``.

    Raises:
        ValueError: no fraction gets within ``tolerance`` (the space is too coarse).
    """
    widths = algorithm.space.width_mutables()
    depths = algorithm.space.depth_mutables()
    if not scale_depth:
        for mutable in depths:
            mutable.set_kept(mutable.num_elements)

    def cost_at(fraction: float, mutables) -> float:
        for mutable in mutables:
            _keep_fraction(mutable, fraction)
        return algorithm.estimator.estimate(resource, hard=True).item()

    scaled = widths + depths if scale_depth else widths
    _, cost = bisect_to_target(lambda f: cost_at(f, scaled), 1.0, target, tolerance, steps)
    if scale_depth and abs(cost - target) > tolerance * target:
        # the depths stay as the closest joint fraction set them
        _, cost = bisect_to_target(lambda f: cost_at(f, widths), 1.0, target, tolerance, steps)
    if abs(cost - target) > tolerance * target:
        kind = 'depth and width' if scale_depth else 'width'
        raise ValueError(f'No uniform {kind} scaling is within {tolerance:.0%} of {target:.6g} '
                         f'{resource}: the closest is {cost:.6g}')
    return cost
