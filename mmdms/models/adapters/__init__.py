# Copyright (c) mmdms contributors. All rights reserved.
"""Family adapters (see :mod:`.base`); importing this package registers mmdms's own."""
import importlib.util

from .base import (CAPABILITIES, FamilyAdapter, ResidualBlockAdapter, adapter_for,
                   adapters_with, import_module_type, registered_adapters, residual_predicate)
from . import mmdet_two_stage  # noqa: F401,E402
from . import mmpretrain_davit  # noqa: F401,E402
from . import mmpretrain_attention_biases  # noqa: F401,E402
from . import mmpretrain_eva02  # noqa: F401,E402
from . import mmpretrain_hornet  # noqa: F401,E402
from . import mmpretrain_inverted_residual  # noqa: F401,E402
from . import mmpretrain_levit  # noqa: F401,E402
from . import mmpretrain_mvit  # noqa: F401,E402
from . import mmpretrain_repmlp  # noqa: F401,E402
from . import mmpretrain_resnet  # noqa: F401,E402
from . import mmpretrain_revvit  # noqa: F401,E402
from . import mmpretrain_stream_attention  # noqa: F401,E402
from . import mmpretrain_swin  # noqa: F401,E402
from . import mmpretrain_tnt  # noqa: F401,E402
from . import mmpretrain_van  # noqa: F401,E402
from . import mmyolo_yolov8  # noqa: F401,E402
from . import reparameterizable  # noqa: F401,E402
from . import torch_multihead_attention  # noqa: F401,E402
from . import vision_transformer  # noqa: F401,E402

if importlib.util.find_spec('transformers') is not None:  # the optional llm extra
    from . import hf_llama  # noqa: F401,E402

__all__ = ['CAPABILITIES', 'FamilyAdapter', 'ResidualBlockAdapter', 'adapter_for',
           'adapters_with', 'import_module_type', 'registered_adapters', 'residual_predicate']
