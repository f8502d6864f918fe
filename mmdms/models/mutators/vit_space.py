# Copyright (c) mmdms contributors. All rights reserved.
"""The width search space of an mmpretrain VisionTransformer (DeiT, ViT), built from its layout.

MMRazor's tracer assumes channels on axis 1; a ViT's tokens are ``(B, N, C)`` and its class
token is concatenated on the token axis, so the tracer finds nothing (0 units on DeiT). The
layout is regular, so the space is built directly (paper App. A.1.1):

* one embedding width shared by the whole residual stream: every LayerNorm of the backbone, each
  attention's qkv input, each FFN's first linear and the classifier head's first linear read
  their input through it (LayerNorm with mask-weighted statistics);
* per attention, the number of heads (lambda = 4N) and the qk and v head dims:
  ``Q' = Q m_qk m_head``, ``K' = K m_qk m_head``, ``V' = V m_v m_head``;
* per FFN, the hidden width: the second linear reads its input through it.
"""
from typing import Dict, List, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmpretrain.models.backbones import VisionTransformer
from mmpretrain.models.utils.attention import MultiheadAttention

from mmdms.models.architectures import (DMSInputMaskMixin, DMSMaskContainer,
                                        replace_with_dms_op)
from mmdms.models.mutables import DMSMutableChannel


class DMSMultiheadAttention(MultiheadAttention):
    """mmpretrain's ``MultiheadAttention`` with DMS masks on heads and qk / v head dims.

    The softmax scale stays ``head_dims ** -0.5`` of the supernet, so a pruned attention (fewer
    heads, smaller qk or v dims) computes exactly what the hard-masked one does.
    """

    def set_dms_masks(self, heads: DMSMutableChannel, qk: DMSMutableChannel,
                      v: DMSMutableChannel) -> None:
        # Plain attributes, not submodules: the mutator owns (and checkpoints) the mutables.
        object.__setattr__(self, '_dms_masks', (heads, qk, v))
        if isinstance(self.qkv, DMSInputMaskMixin):
            # q, k and v are masked by scaling the rows of qkv's weight and bias (the DMS
            # linear folds ``dms_output_mask`` in), not the (B, heads, N, dims) activations
            self.qkv.dms_output_mask = QKVMask(heads, qk, v)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, _ = x.shape
        qkv = self.qkv(x)
        if not (isinstance(self.qkv, DMSInputMaskMixin)
                and getattr(self.qkv, 'dms_output_mask', None) is not None):
            qkv = qkv * QKVMask(*self._dms_masks)().to(qkv.dtype)
        qkv = qkv.reshape(B, N, 3, self.num_heads, self.head_dims).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn_drop = self.attn_drop if self.training else 0.
        x = F.scaled_dot_product_attention(q, k, v, dropout_p=attn_drop,
                                           scale=self.head_dims**-0.5)
        x = x.transpose(1, 2).reshape(B, N, self.embed_dims)
        x = self.proj(x)
        x = self.out_drop(self.gamma1(self.proj_drop(x)))
        if self.v_shortcut:
            x = v.squeeze(1) + x
        return x


class QKVMask:
    """The soft mask over an attention's ``qkv`` output features ``(3, heads, head_dims)``:
    ``Q' = Q m_qk m_head``, ``K' = K m_qk m_head``, ``V' = V m_v m_head``."""

    def __init__(self, heads: DMSMutableChannel, qk: DMSMutableChannel,
                 v: DMSMutableChannel) -> None:
        self.heads, self.qk, self.v = heads, qk, v

    def __call__(self, hard: bool = False) -> torch.Tensor:
        qk = _outer(self.heads, self.qk, hard)
        return torch.cat([qk, qk, _outer(self.heads, self.v, hard)])


def masked_input_op(model: nn.Module, name: str, mutable: DMSMutableChannel) -> nn.Module:
    """Make layer ``name`` read its input channels through ``mutable``'s soft mask.

    The layer becomes its DMS op (:func:`replace_with_dms_op`) and ``mutable`` is registered over
    all of its input channels.
    """
    layer = replace_with_dms_op(model, name)
    if not hasattr(layer, 'get_mutable_attr'):
        raise TypeError(f"Layer '{name}' ({type(layer).__name__}) has no DMS op to mask its input")
    container = layer.get_mutable_attr('in_channels')
    if container is None:
        in_attr = layer.attr_mappings['in_channels']
        layer.register_mutable_attr('in_channels', DMSMaskContainer(getattr(layer, in_attr)))
        container = layer.get_mutable_attr('in_channels')
    if container.num_channels != mutable.num_channels:
        raise ValueError(f"Layer '{name}' has {container.num_channels} input channels, the "
                         f'mutable {mutable.num_channels}')
    container.mutable_channels.clear()
    container.register_mutable(mutable, 0, mutable.num_channels)
    return layer


class ViTSearchSpace:
    """Builds and applies the DMS widths of one mmpretrain VisionTransformer.

    Args:
        model (nn.Module): the whole model (the backbone and the head are found by name).
        backbone_name (str): name of the VisionTransformer inside ``model``.
        width_args (dict): arguments of every :class:`DMSMutableChannel`.
        head_lambda_scale (float): temperature scale of the head-count mutables (paper: 4).
    """

    def __init__(self, model: nn.Module, backbone_name: str, width_args: Dict,
                 head_lambda_scale: float = 4.0) -> None:
        self.model = model
        self.name = backbone_name
        self.backbone: VisionTransformer = model.get_submodule(backbone_name)
        self.width_args = dict(width_args)
        self.head_lambda_scale = head_lambda_scale
        self.mutables: Dict[str, DMSMutableChannel] = {}
        self.layers: Dict[str, List[str]] = {}

    def _new(self, key: str, num: int, layers: List[str], **extra) -> DMSMutableChannel:
        args = dict(self.width_args)
        args.update(extra)
        mutable = DMSMutableChannel(num, **args)
        self.mutables[key] = mutable
        self.layers[key] = layers
        return mutable

    def _full(self, local: str) -> str:
        return f'{self.name}.{local}' if self.name else local

    def build(self) -> Dict[str, DMSMutableChannel]:
        """Create the mutables and make the layers apply their masks."""
        embed_dims = self.backbone.embed_dims
        consumers = [n for n, m in self.backbone.named_modules()
                     if isinstance(m, nn.LayerNorm) and m.normalized_shape[-1] == embed_dims]
        attentions = []
        for i, layer in enumerate(self.backbone.layers):
            prefix = f'layers.{i}'
            attn = layer.attn
            if type(attn) is not MultiheadAttention:
                raise TypeError(f"'{self._full(prefix)}.attn' is {type(attn).__name__}; the ViT "
                                "search space handles mmpretrain's MultiheadAttention")
            consumers.append(f'{prefix}.attn.qkv')
            linears = [n for n, m in layer.ffn.named_modules() if isinstance(m, nn.Linear)]
            if len(linears) != 2:
                raise TypeError(f"'{self._full(prefix)}.ffn' has {len(linears)} linear layers; "
                                'the ViT search space expects 2')
            fc1, fc2 = (f'{prefix}.ffn.{n}' for n in linears)
            consumers.append(fc1)
            hidden = self.backbone.get_submodule(fc2).in_features
            mlp = self._new(f'{prefix}.ffn.hidden', hidden, [fc1, fc2])
            masked_input_op(self.backbone, fc2, mlp)
            heads = self._new(f'{prefix}.attn.heads', attn.num_heads,
                              [f'{prefix}.attn.qkv', f'{prefix}.attn.proj'],
                              lambda_scale=self.head_lambda_scale)
            qk = self._new(f'{prefix}.attn.qk_dims', attn.head_dims, [f'{prefix}.attn.qkv'])
            v = self._new(f'{prefix}.attn.v_dims', attn.head_dims,
                          [f'{prefix}.attn.qkv', f'{prefix}.attn.proj'])
            # Same state and submodules; only forward differs (DMSMultiheadAttention adds no
            # parameters), so the class is swapped in place.
            attn.__class__ = DMSMultiheadAttention
            attentions.append((attn, heads, qk, v))
        embed = self._new('embed', embed_dims, ['patch_embed.projection'] + consumers)
        for name in consumers:
            masked_input_op(self.backbone, name, embed)
        for attn, heads, qk, v in attentions:  # after qkv became a DMS linear
            attn.set_dms_masks(heads, qk, v)
        head_input = self._head_input_layer(embed_dims)
        if head_input is not None:
            masked_input_op(self.model, head_input, embed)
            self.layers['embed'].append(head_input)
        self.layers = {k: [self._full(n) if n != head_input else n for n in v]
                       for k, v in self.layers.items()}
        return {self._full(k): m for k, m in self.mutables.items()}

    def _head_input_layer(self, embed_dims: int) -> Optional[str]:
        """The first linear after the backbone that reads the embedding (the classifier's)."""
        backbone_prefix = self.name + '.'
        for name, module in self.model.named_modules():
            if name.startswith(backbone_prefix) or name == self.name:
                continue
            if isinstance(module, nn.Linear) and module.in_features == embed_dims:
                return name
        return None


def find_vision_transformers(model: nn.Module) -> List[str]:
    """Names of the mmpretrain VisionTransformer backbones inside ``model``."""
    return [n for n, m in model.named_modules() if isinstance(m, VisionTransformer)]


def _outer(a: DMSMutableChannel, b: DMSMutableChannel, hard: bool) -> torch.Tensor:
    """``a_i b_j`` flattened ``(i, j)``: the mask of a ``(heads, head_dims)`` feature axis."""
    ma, mb = (a.hard_mask, b.hard_mask) if hard else (a.soft_mask, b.soft_mask)
    return (ma[:, None] * mb[None, :]).flatten()


def add_vit_masks(model: nn.Module, mutator, layout) -> None:
    """Add the ViT widths of ``mutator`` to ``layout`` (a :class:`MaskedLayout`).

    The embedding mask is on every residual-stream output (patch embedding, attention
    projections, second FFN linears) and on the last axis of the class / distillation token and
    the position embedding; ``qkv``'s output is ``(3, heads, head_dims)``, ``proj``'s input
    ``(heads, head_dims)``.
    """
    from .masked_layout import AttentionMasks, LayerMasks, mutable_mask

    def mutable(key: str) -> DMSMutableChannel:
        return mutator.structured_mutables[key.replace('.', '__')]

    def set_mask(name: str, in_mask=None, out_mask=None) -> None:
        masks = layout.layers.setdefault(name, LayerMasks())
        if in_mask is not None:
            masks.in_mask = in_mask
        if out_mask is not None:
            masks.out_mask = out_mask

    for name in find_vision_transformers(model):
        prefix = f'{name}.' if name else ''
        if f'{prefix}embed'.replace('.', '__') not in mutator.structured_mutables:
            continue
        backbone = model.get_submodule(name)
        embed = mutable_mask(mutable(f'{prefix}embed'))
        set_mask(f'{prefix}patch_embed.projection', out_mask=embed)
        for param_name, param in backbone.named_parameters(recurse=False):
            if param.shape[-1] == backbone.embed_dims:
                layout.params[f'{prefix}{param_name}'] = embed
        for i, layer in enumerate(backbone.layers):
            base = f'{prefix}layers.{i}'
            heads, qk, v = (mutable(f'{base}.attn.{k}') for k in ('heads', 'qk_dims', 'v_dims'))
            layout.attentions[f'{base}.attn'] = AttentionMasks(heads, qk, v)
            set_mask(f'{base}.attn.qkv', out_mask=QKVMask(heads, qk, v))
            set_mask(f'{base}.attn.proj', in_mask=lambda hard, h=heads, v=v: _outer(h, v, hard),
                     out_mask=embed)
            fc1, fc2 = (f'{base}.ffn.{n}' for n, m in layer.ffn.named_modules()
                        if isinstance(m, nn.Linear))
            set_mask(fc1, out_mask=mutable_mask(mutable(f'{base}.ffn.hidden')))
            set_mask(fc2, out_mask=embed)
