# Copyright (c) mmdms contributors. All rights reserved.
"""The resource target schedule of a DMS search (paper App. A.1.2, Eq. 10)."""


def decay_progress(step: int, decay_steps: int) -> float:
    """How far the target has decayed during ``step``: ``min((step + 1) / decay_steps, 1)``.

    ``step`` is the 0-based epoch (iteration for an iteration-based loop). Counting from 1 at
    the first step makes the last decay step ``decay_steps - 1`` reach progress 1, so the target
    is ``r_final`` there already, and stays so in the width-only steps after it.

    Args:
        step (int): the current epoch / iteration, from 0.
        decay_steps (int): epochs / iterations the target decays over, at least 1.

    Returns:
        float: the progress in ``(0, 1]``.
    """
    if decay_steps < 1:
        raise ValueError(f'The target needs at least 1 step to decay over, got {decay_steps}')
    if step < 0:
        raise ValueError(f'The step counts from 0, got {step}')
    return min((step + 1) / decay_steps, 1.0)


def resource_target_at(step: int, decay_steps: int, r_supernet: float, r_final: float) -> float:
    """The target ``r_t`` during ``step``, Eq. 10: ``(r_final / r_supernet) ** p * r_supernet``.

    ``p`` is :func:`decay_progress`; the paper's ``e / e_max`` with ``e`` counted from 1. The
    target decays geometrically from the supernet's cost, is ``r_final`` exactly once the decay
    is over, and never leaves ``[r_final, r_supernet]`` (nor increases) under float rounding.

    Args:
        step (int): the current epoch / iteration, from 0.
        decay_steps (int): epochs / iterations the target decays over, at least 1.
        r_supernet (float): the supernet's cost (every mask at 1), positive.
        r_final (float): the final target, positive and at most ``r_supernet``.

    Returns:
        float: ``r_t``, in the unit of the costs.
    """
    if not 0 < r_final <= r_supernet:
        raise ValueError(f'Eq. 10 needs 0 < r_final <= r_supernet, got r_final={r_final}, '
                         f'r_supernet={r_supernet}')
    progress = decay_progress(step, decay_steps)
    if progress >= 1.0:
        return float(r_final)
    value = (r_final / r_supernet)**progress * r_supernet
    return float(min(max(value, r_final), r_supernet))
