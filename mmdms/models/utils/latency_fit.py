# Copyright (c) mmdms contributors. All rights reserved.
"""The latency model, fitted once and shared by every data-parallel rank."""
from typing import Callable, Optional

from mmengine.dist import broadcast_object_list, is_main_process
from torch import nn


def fit_latency_and_broadcast(estimator, architecture: nn.Module,
                              supernet: Optional[Callable[[], nn.Module]] = None,
                              **fit_args) -> None:
    """Fit ``estimator``'s latency model on the main process and give it to every rank.

    Timings differ from rank to rank (and would cost every rank the measuring time); fitted
    independently, the ranks would see different ``r_c`` and learn different structures. The
    main process times the layers and the whole supernet
    (:meth:`DMSResourceEstimator.fit_latency`), the others wait for its result, the per-layer
    fit and its correction to the measured supernet together, in one broadcast. Without a
    process group it just fits.

    Args:
        estimator (DMSResourceEstimator): the search model's estimator; its ``latency_model``
            is set on every rank.
        architecture (nn.Module): the search model's architecture, whose layers are timed.
        supernet (callable, optional): builds the static supernet to time whole (called on the
            main process only); without it the per-layer sum is not corrected.
        **fit_args: arguments of the fit (``fractions``, ``repeats``, ``correction``, ...).
    """
    fitted = [None]
    if is_main_process():
        whole = supernet() if supernet is not None else None
        estimator.fit_latency(architecture, supernet=whole, **fit_args)
        fitted = [estimator.latency_model]
    broadcast_object_list(fitted)
    estimator.latency_model = fitted[0]
