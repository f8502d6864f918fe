# Copyright (c) mmdms contributors. All rights reserved.
"""Differentiable Model Scaling (DMS) for OpenMMLab.

Importing the package applies the torch-2.13 compatibility shims (:mod:`mmdms.compat`) and
registers every module it defines into the OpenMMLab registries.
"""
from . import compat

compat.apply_all()

from . import datasets, engine, models, structures, utils  # noqa: E402,F401  (registrations)
from .version import __version__, version_info  # noqa: E402,F401

__all__ = ['__version__', 'version_info']
