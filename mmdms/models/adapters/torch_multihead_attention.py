# Copyright (c) mmdms contributors. All rights reserved.
"""The heads of ``torch.nn.MultiheadAttention`` (TNT's attentions, DETR's), searched with their
dims kept, after its stream (:mod:`mmdms.models.layer_rules.multihead_attention`).

``in_proj_weight``'s rows are ``[q | k | v]`` of ``(heads, head_dims)`` each: the heads' mask
(``dms_heads_mask`` on the DMS op) scales those rows and ``in_proj_bias``, so a pruned head's
q, k and v are zero and so is its output, whatever its softmax. The head dims stay (searching
them would need q / k dims apart from v dims, which torch's attention does not have). The
export slices the kept heads' rows and ``out_proj``'s columns and makes the attention a
:class:`~mmdms.models.layer_rules.PrunedTorchMultiheadAttention` of the kept heads.
"""
from typing import Dict

import torch
import torch.nn as nn

from mmdms.models.layer_rules import PrunedTorchMultiheadAttention, replace_with_dms_op
from mmdms.models.layer_rules.multihead_attention import _unsupported
from mmdms.registry import ADAPTERS
from .base import FamilyAdapter
from .searched_attention import QKVMask, head_mutables

#: temperature scale of the head-count mutables (paper App. A.1.1)
HEAD_LAMBDA_SCALE = 4.0


@ADAPTERS.register_module()
class TorchMultiheadAttentionAdapter(FamilyAdapter):
    """``torch.nn.MultiheadAttention``: its heads (see the module docstring); one with
    ``bias_k`` / ``add_zero_attn`` or separate key / value widths keeps them."""

    module_type = nn.MultiheadAttention
    build_after_trace = True

    def build_space(self, model: nn.Module, name: str, space, width_args: Dict) -> None:
        attn = model.get_submodule(name)
        if _unsupported(attn) is not None or attn.num_heads < 2:
            return
        heads, qk, v = head_mutables(width_args, attn.num_heads, attn.head_dim,
                                     HEAD_LAMBDA_SCALE, search_dims=False)
        replace_with_dms_op(model, name).dms_heads_mask = QKVMask(heads, qk, v)
        space.add_width(f'{name}.heads', heads, [name])
        space.add_attention(name, heads, qk, v)

    def static_rule(self, module: nn.Module, name: str, subnet: Dict) -> None:
        spec = subnet.get('attentions', {}).get(name)
        if spec is None or spec['heads']['kept'] == spec['heads']['total']:
            return
        kept, head_dims = spec['heads']['indices'], module.head_dim
        features = torch.tensor([h * head_dims + d for h in kept for d in range(head_dims)])
        rows = torch.cat([features + part * module.embed_dim for part in range(3)])
        with torch.no_grad():
            module.in_proj_weight = nn.Parameter(module.in_proj_weight[rows].clone())
            if module.in_proj_bias is not None:
                module.in_proj_bias = nn.Parameter(module.in_proj_bias[rows].clone())
            module.out_proj.weight = nn.Parameter(module.out_proj.weight[:, features].clone())
        module.out_proj.in_features = len(features)
        module.num_heads, module.embed_dim = len(kept), len(features)
        module.__class__ = PrunedTorchMultiheadAttention
