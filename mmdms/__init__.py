# Copyright (c) mmdms contributors. All rights reserved.
"""Differentiable Model Scaling (DMS) for OpenMMLab.

Importing the package applies the torch-2.13 compatibility shims (:mod:`mmdms.compat`) and
registers every module it defines into the OpenMMLab registries.
"""
from . import compat

compat.apply_all()

# registrations
from . import datasets, engine, evaluation, models, structures, utils  # noqa: E402,F401
from .version import __version__, version_info  # noqa: E402,F401

__all__ = ['__version__', 'version_info']
