# Copyright (c) mmdms contributors. All rights reserved.
"""The per-layer latency model, fitted once and shared by every data-parallel rank."""
from mmengine.dist import broadcast_object_list, is_main_process
from torch import nn


def fit_latency_and_broadcast(estimator, architecture: nn.Module, **fit_args) -> None:
    """Fit ``estimator``'s latency model on the main process and give it to every rank.

    Timings differ from rank to rank (and would cost every rank the measuring time); fitted
    independently, the ranks would see different ``r_c`` and learn different structures. The
    main process times the layers (:meth:`DMSResourceEstimator.fit_latency`), the others wait
    for its result in one broadcast. Without a process group it just fits.

    Args:
        estimator (DMSResourceEstimator): the search model's estimator; its ``latency_model``
            is set on every rank.
        architecture (nn.Module): the supernet whose layers are timed.
        **fit_args: arguments of the fit (``fractions``, ``repeats``).
    """
    fitted = [None]
    if is_main_process():
        estimator.fit_latency(architecture, **fit_args)
        fitted = [estimator.latency_model]
    broadcast_object_list(fitted)
    estimator.latency_model = fitted[0]
