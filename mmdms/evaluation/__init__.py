# Copyright (c) mmdms contributors. All rights reserved.
"""Metrics (registered in mmpretrain's ``METRICS``, a child of mmengine's)."""
from .perplexity import Perplexity

__all__ = ['Perplexity']
