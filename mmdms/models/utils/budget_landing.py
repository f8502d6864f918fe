# Copyright (c) mmdms contributors. All rights reserved.
"""Land a searched structure on its resource target: one element of one width at a time.

DMS's resource loss brings the soft cost to the target, but the exported (hard) structure moves
in whole elements: on a small supernet one channel of a residual stream can be several percent
of the budget (Fashion-MNIST's ResNet at 4x: one channel of the first stage's stream is about
13% of the target), so the search may stop a few percent off. This finishes it the way a user
would by hand: single-element changes of the widths, chosen greedily (a move that lands first,
else the largest move that stays short of the target), until the hard cost is within a
tolerance of the target. Depths are left as searched.
"""
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Tuple

import torch


@dataclass
class Landing:
    """What :func:`land_on_target` did.

    Attributes:
        before (float): the hard cost before.
        after (float): the hard cost after.
        target (float): the target.
        tolerance (float): the accepted relative distance to the target.
        moves (dict): width key -> (kept elements before, kept elements after).
    """
    before: float
    after: float
    target: float
    tolerance: float
    moves: Dict[str, Tuple[int, int]] = field(default_factory=dict)

    @property
    def landed(self) -> bool:
        return abs(self.after - self.target) <= self.tolerance * self.target

    def describe(self) -> str:
        moves = ', '.join(f'{key} {a} -> {b}' for key, (a, b) in self.moves.items()) or 'none'
        state = 'within' if self.landed else 'NOT within'
        return (f'{self.before:.6g} -> {self.after:.6g}, {state} {self.tolerance:.1%} of the '
                f'target {self.target:.6g}; widths moved (elements kept): {moves}')


def land_on_target(widths: Dict[str, torch.nn.Module], estimate: Callable[[], float],
                   target: float, tolerance: float) -> Landing:
    """Step single elements of ``widths`` until ``estimate()`` is within ``tolerance`` of
    ``target``.

    Each round tries one element more (below the target) or fewer (above) on every width that
    can move. A move that lands in the band is taken, the one closest to the target; otherwise
    the largest move towards the target that stays on the same side of it. Nothing changes when
    the cost is already in the band. Which elements a move adds or drops is the widths' ranking
    (the next most important one, the least important kept one).

    Args:
        widths (dict): key -> DMS top-k mutable (``num_kept``, ``set_kept``, ``num_elements``,
            ``min_elements``, ``dms_ratio``).
        estimate (callable): the hard cost of the current structure.
        target (float): the target cost, positive.
        tolerance (float): the accepted relative distance, in (0, 1).

    Returns:
        Landing: the costs before and after and the widths moved; ``landed`` is False when every
        remaining move would jump over the whole band (the widths are too coarse for it) or no
        width can move further.
    """
    if not target > 0 or not 0 < tolerance < 1:
        raise ValueError(f'land_on_target needs a positive target and a tolerance in (0, 1), '
                         f'got {target} and {tolerance}')
    cost = float(estimate())
    landing = Landing(before=cost, after=cost, target=target, tolerance=tolerance)
    limit = tolerance * target
    for _ in range(sum(m.num_elements for m in widths.values())):
        if abs(cost - target) <= limit:
            break
        step = -1 if cost > target else 1
        tried = _try_each(widths, estimate, step)
        inside = [(abs(c - target), key) for key, c in tried if abs(c - target) <= limit]
        same_side = [(abs(c - target), key) for key, c in tried
                     if (c > target) == (cost > target) and abs(c - target) < abs(cost - target)]
        chosen = min(inside or same_side, default=None)
        if chosen is None:
            break
        key = chosen[1]
        kept = widths[key].num_kept
        first = landing.moves.get(key, (kept, kept))[0]
        widths[key].set_kept(kept + step)
        landing.moves[key] = (first, kept + step)
        cost = float(estimate())
    landing.after = cost
    return landing


def _try_each(widths: Dict[str, torch.nn.Module], estimate: Callable[[], float],
              step: int) -> List[Tuple[str, float]]:
    """The cost after moving each width by ``step`` elements alone (each restored after)."""
    tried = []
    for key, mutable in widths.items():
        kept = mutable.num_kept
        if not mutable.min_elements <= kept + step <= mutable.num_elements:
            continue
        ratio = mutable.dms_ratio.detach().clone()
        mutable.set_kept(kept + step)
        tried.append((key, float(estimate())))
        with torch.no_grad():
            mutable.dms_ratio.copy_(ratio)
    return tried
