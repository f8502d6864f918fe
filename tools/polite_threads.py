# Copyright (c) mmdms contributors. All rights reserved.
"""Make the tools polite neighbours on shared cores. Import before torch (``import mmdms``
imports torch, so this module lives outside the package).

With OpenMP's default (active) wait policy, an idle intra-op thread spins for a while before it
sleeps; when another process shares the cores, the spinning threads take the CPU from the
threads doing the work and torch slows down many times over (the tests saw 10-100x on 2 cores).
"""
import os


def passive_omp_wait() -> None:
    """Let idle OpenMP threads sleep (``OMP_WAIT_POLICY=PASSIVE``) unless the user chose a
    policy. Takes effect only if called before torch (and its OpenMP runtime) is loaded."""
    os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')
