# Copyright (c) mmdms contributors. All rights reserved.
"""mmpretrain's VisionTransformer family (ViT, DeiT): its width space, built from its layout.

MMRazor's tracer assumes channels on axis 1; a ViT's tokens are ``(B, N, C)`` and its class
token is concatenated on the token axis, so the tracer finds nothing (0 units on DeiT). The
layout is regular, so the space is built directly (paper App. A.1.1):

* one embedding width shared by the whole residual stream: every LayerNorm of the backbone, each
  attention's qkv input, each FFN's first linear and the classifier head's first linear read
  their input through it (LayerNorm with mask-weighted statistics); it is also the last axis of
  the class / distillation token and the position embedding;
* per attention, the number of heads (lambda = 4N) and the qk and v head dims:
  ``Q' = Q m_qk m_head``, ``K' = K m_qk m_head``, ``V' = V m_v m_head``; the attention's
  ``heads * (qk + v) * N^2`` MACs are counted by
  :class:`~mmdms.models.adapters.searched_attention.AttentionRule`, and the export makes it a
  :class:`~mmdms.models.architectures.PrunedMultiheadAttention`;
* per FFN, the hidden width: the second linear reads its input through it.

Transformer encoder layers are identity-residual blocks (depth).
"""
from typing import Dict, List, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmpretrain.models.backbones import VisionTransformer
from mmpretrain.models.backbones.vision_transformer import TransformerEncoderLayer
from mmpretrain.models.utils.attention import MultiheadAttention
from mmpretrain.models.utils.layer_scale import LayerScale

from mmdms.models.architectures import PrunedMultiheadAttention
from mmdms.models.architectures.pruned_attention import attention_scale
from mmdms.models.layer_rules import DMSInputMaskMixin, DMSLayerNorm, mask_input_channels
from mmdms.models.mutables import DMSMutableChannel
from mmdms.models.search_space import container_mask, mutable_mask, no_mask, sole_mutable
from mmdms.registry import ADAPTERS
from .base import FamilyAdapter, ResidualBlockAdapter
# the heads / head dims machinery, shared with the window attentions (AttentionRule counts
# this family's attentions too)
from .searched_attention import (AttentionRule, HeadsDimsMask, QKVMask,  # noqa: F401
                                 add_traced_attention, convert_searched_attention)


class DMSMultiheadAttention(MultiheadAttention):
    """mmpretrain's ``MultiheadAttention`` with DMS masks on heads and qk / v head dims.

    The softmax scale stays the supernet's (``head_dims ** -0.5``, or what
    :func:`~mmdms.models.architectures.pruned_attention.attention_scale` reads), so a pruned
    attention (fewer heads, smaller qk or v head dims) computes exactly what the hard-masked
    one does.
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
                                           scale=attention_scale(self))
        x = x.transpose(1, 2).reshape(B, N, self.embed_dims)
        x = self.proj(x)
        x = self.out_drop(self.gamma1(self.proj_drop(x)))
        if self.v_shortcut:
            x = v.squeeze(1) + x
        return x


@ADAPTERS.register_module()
class MultiheadAttentionAdapter(FamilyAdapter):
    """Exports a searched attention as a :class:`PrunedMultiheadAttention`; outside a
    ``VisionTransformer`` (whose space builds its attentions), searches the heads and qk / v
    head dims of an attention the channel tracer entered (Conformer's, MobileViT's, T2T's
    transformer layers ...; :func:`~.searched_attention.add_traced_attention`). Its own forward
    calls ``qkv`` as a layer, so its DMS op applies the mask. Not for subclasses (Twins' have
    their own adapters) nor an attention with ``v_shortcut`` (which adds its values to its
    output: a pruned v dim would change the stream).

    Attributes:
        head_lambda_scale (float): temperature scale of the head-count mutables (paper: 4).
    """

    module_type = MultiheadAttention
    match_subclasses = False
    build_after_trace = True
    head_lambda_scale = 4.0

    def handles(self, module: nn.Module) -> bool:
        return not getattr(module, 'v_shortcut', False)

    def build_space(self, model: nn.Module, name: str, space, width_args: Dict) -> None:
        add_traced_attention(model, name, space, width_args, self.head_lambda_scale)

    def static_rule(self, module: nn.Module, name: str, subnet: Dict) -> None:
        if not isinstance(module, PrunedMultiheadAttention):
            convert_searched_attention(module, name, subnet, PrunedMultiheadAttention)


@ADAPTERS.register_module()
class TransformerEncoderLayerAdapter(ResidualBlockAdapter):
    module_type = 'mmpretrain.models.backbones.vision_transformer.TransformerEncoderLayer'


@ADAPTERS.register_module()
class VisionTransformerAdapter(FamilyAdapter):
    """Builds the width space of an mmpretrain ``VisionTransformer`` (see the module docstring).

    Attributes:
        head_lambda_scale (float): temperature scale of the head-count mutables (paper: 4).
    """

    module_type = VisionTransformer
    head_lambda_scale = 4.0

    def handles(self, module: nn.Module) -> bool:
        """A ViT of mmpretrain's encoder layers (``attn`` a ``MultiheadAttention``, an ``ffn``);
        one of other layers (EVA-02's ``EVA02EndcoderLayer``, rotary attention and SwiGLU FFN)
        is traced like the other token models."""
        return all(type(getattr(layer, 'attn', None)) is MultiheadAttention and
                   hasattr(layer, 'ffn') for layer in getattr(module, 'layers', ()))

    def build_space(self, model: nn.Module, name: str, space, width_args: Dict) -> None:
        backbone = model.get_submodule(name)
        prefix = f'{name}.' if name else ''
        embed_dims = backbone.embed_dims

        def new(key: str, num: int, **extra) -> DMSMutableChannel:
            args = dict(width_args)
            args.update(extra)
            return DMSMutableChannel(num, **args)

        consumers = [n for n, m in backbone.named_modules()
                     if isinstance(m, nn.LayerNorm) and m.normalized_shape[-1] == embed_dims]
        widths, attentions, explicit, linears_of_layer = [], [], [], []
        for i, layer in enumerate(backbone.layers):
            base = f'layers.{i}'
            attn = layer.attn
            if type(attn) is not MultiheadAttention:
                raise TypeError(f"'{prefix}{base}.attn' is {type(attn).__name__}; the ViT "
                                "search space handles mmpretrain's MultiheadAttention")
            consumers.append(f'{base}.attn.qkv')
            linears = [n for n, m in layer.ffn.named_modules() if isinstance(m, nn.Linear)]
            if len(linears) != 2:
                raise TypeError(f"'{prefix}{base}.ffn' has {len(linears)} linear layers; the "
                                'ViT search space expects 2')
            fc1, fc2 = (f'{base}.ffn.{n}' for n in linears)
            linears_of_layer.append((f'{base}.attn.qkv', fc1))
            consumers.append(fc1)
            mlp = new('hidden', backbone.get_submodule(fc2).in_features)
            mask_input_channels(backbone, fc2, mlp)
            heads = new('heads', attn.num_heads, lambda_scale=self.head_lambda_scale)
            qk = new('qk_dims', attn.head_dims)
            v = new('v_dims', attn.head_dims)
            widths += [(f'{base}.ffn.hidden', mlp, [fc1, fc2]),
                       (f'{base}.attn.heads', heads, [f'{base}.attn.qkv', f'{base}.attn.proj']),
                       (f'{base}.attn.qk_dims', qk, [f'{base}.attn.qkv']),
                       (f'{base}.attn.v_dims', v, [f'{base}.attn.qkv', f'{base}.attn.proj'])]
            # Same state and submodules; only forward differs (DMSMultiheadAttention adds no
            # parameters), so the class is swapped in place.
            attn.__class__ = DMSMultiheadAttention
            attentions.append((f'{base}.attn', attn, heads, qk, v))
            explicit += [(fc1, None, mlp), (fc2, None, 'embed'),
                         (f'{base}.attn.qkv', None, QKVMask(heads, qk, v)),
                         (f'{base}.attn.proj', HeadsDimsMask(heads, v), 'embed')]
        embed = new('embed', embed_dims)
        for consumer in consumers:
            mask_input_channels(backbone, consumer, embed)
        for i in range(len(backbone.layers)):
            _fold_into_layer_norms(backbone, f'layers.{i}', linears_of_layer[i])
        for _, attn, heads, qk, v in attentions:  # after qkv became a DMS linear
            attn.set_dms_masks(heads, qk, v)
        embed_layers = ['patch_embed.projection'] + consumers
        head_input = self._head_input_layer(model, name, embed_dims)

        for key, mutable, layers in widths:
            space.add_width(prefix + key, mutable, [prefix + n for n in layers])
        space.add_width(prefix + 'embed', embed, [prefix + n for n in embed_layers] +
                        ([head_input] if head_input is not None else []))
        if head_input is not None:
            mask_input_channels(model, head_input, embed)
            _record_containers(space, model, head_input)
        for local in consumers + [n for n, _, _ in explicit]:
            _record_containers(space, model, prefix + local)
        embed_mask = mutable_mask(embed)
        space.set_layer_masks(prefix + 'patch_embed.projection', out_mask=embed_mask)
        for param_name in _stream_params(backbone, embed_dims):
            space.add_param(prefix + param_name, embed_mask)
        for base, _, heads, qk, v in attentions:
            space.add_attention(prefix + base, heads, qk, v)
        for local, in_mask, out_mask in explicit:
            if out_mask == 'embed':
                out_mask = embed_mask
            elif isinstance(out_mask, DMSMutableChannel):
                out_mask = mutable_mask(out_mask)
            space.set_layer_masks(prefix + local, in_mask=in_mask, out_mask=out_mask)

    @staticmethod
    def _head_input_layer(model: nn.Module, name: str, embed_dims: int) -> Optional[str]:
        """The first linear after the backbone that reads the embedding (the classifier's)."""
        backbone_prefix = name + '.'
        for module_name, module in model.named_modules():
            if module_name.startswith(backbone_prefix) or module_name == name:
                continue
            if isinstance(module, nn.Linear) and module.in_features == embed_dims:
                return module_name
        return None


def _stream_params(backbone: nn.Module, embed_dims: int) -> List[str]:
    """The parameters of the residual stream that no layer owns: the backbone's own (class /
    distillation token, position embedding) and the weight of every ``LayerScale`` on the
    stream (DeiT-3's ``gamma1`` / ``gamma2``), each with the embedding on its last axis. The
    export slices them with the embedding (DeiT-3's static model met a full-width LayerScale
    with the pruned stream)."""
    names = [n for n, p in backbone.named_parameters(recurse=False) if p.shape[-1] == embed_dims]
    for module_name, module in backbone.named_modules():
        if isinstance(module, LayerScale) and module.weight.shape == (embed_dims, ):
            names.append(f'{module_name}.weight')
    return names


def _fold_into_layer_norms(backbone: nn.Module, layer: str, readers: tuple) -> None:
    """Let ``ln1`` and ``ln2`` of an encoder layer apply the embedding mask of ``qkv`` and ``fc1``.

    ``TransformerEncoderLayer.forward`` is ``x + attn(ln1(x))`` then ``ffn(ln2(x), x)``: the
    only reader of ``ln1`` is ``qkv``, of ``ln2`` the FFN's first linear. A
    :class:`~mmdms.models.layer_rules.layer_norm.DMSLayerNorm` already multiplies its output by
    the embedding mask (folded into its affine parameters), so the readers' own input mask would
    apply it a second time: ``m^2`` at a soft mask instead of the paper's one ``m``, and a
    weight-sized multiply and its backward per linear. The readers keep the mask in the search
    space (it is their input width); only the forward skips it.
    """
    encoder = backbone.get_submodule(layer)
    if type(encoder).forward is not TransformerEncoderLayer.forward:
        return  # another forward may read the norms elsewhere
    for norm_name, reader_name in zip(('ln1', 'ln2'), readers):
        norm, reader = getattr(encoder, norm_name, None), backbone.get_submodule(reader_name)
        if not (isinstance(norm, DMSLayerNorm) and isinstance(reader, DMSInputMaskMixin)):
            continue
        mutable = sole_mutable(norm.get_mutable_attr('in_channels'))
        if mutable is not None and \
                mutable is sole_mutable(reader.get_mutable_attr('in_channels')):
            reader.fold_input_mask = True


def _record_containers(space, model: nn.Module, name: str) -> None:
    """The masks a layer's DMS op reads through its channel containers."""
    layer = model.get_submodule(name)
    in_mask, out_mask = container_mask(layer, 'in_channels'), container_mask(layer, 'out_channels')
    space.set_layer_masks(name, in_mask if in_mask is not no_mask else None,
                          out_mask if out_mask is not no_mask else None)


def find_vision_transformers(model: nn.Module) -> List[str]:
    """Names of the mmpretrain VisionTransformer backbones inside ``model``."""
    return [n for n, m in model.named_modules() if isinstance(m, VisionTransformer)]
