# Copyright (c) mmdms contributors. All rights reserved.
"""An mmengine model around a Hugging Face ``transformers`` causal language model.

:class:`HFCausalLM` builds ``AutoModelForCausalLM`` from a config dict (random weights) or a
local checkpoint directory, and speaks mmengine's ``forward(inputs, data_samples, mode)``:

* ``'tensor'``: the logits ``(B, N, vocab)``;
* ``'loss'``: ``dict(loss=...)``, the next-token cross-entropy averaged over the predicted
  tokens;
* ``'predict'``: per sample a dict with ``nll`` (summed next-token negative log-likelihood) and
  ``num_tokens`` (tokens predicted), from which a metric gives the perplexity
  ``exp(sum nll / sum num_tokens)``.

``inputs`` are token ids ``(B, N)``. A floating-point tensor is accepted and truncated to ids:
MMRazor's demo inputs and the resource estimator's recording forward pass ``rand`` / ``zeros`` of
a shape, and the shapes are all they need.
"""
import os.path as osp
from typing import Dict, List, Optional, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.model import BaseModel
from mmrazor.registry import MODELS
from torch import Tensor


def _transformers():
    try:
        import transformers
    except ImportError as e:
        raise ImportError('HFCausalLM needs Hugging Face transformers: pip install -e .[llm] '
                          '(or the version pinned in requirements/optional.txt)') from e
    return transformers


class ShapeOnlyRotaryEmbedding(nn.Module):
    """Stands in for a rotary position embedding on the meta device, where ``transformers``'
    own cannot run (it disables ``torch.autocast`` for the input's device type, and autocast
    has no meta device): ``cos`` and ``sin`` of the right shape ``(B, N, dim)`` and dtype,
    without values."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, x: Tensor, position_ids: Tensor) -> tuple:
        shape = (*position_ids.shape, self.dim)
        return (torch.empty(shape, dtype=x.dtype, device=x.device),
                torch.empty(shape, dtype=x.dtype, device=x.device))


def _shape_only_rotary_embeddings(model: nn.Module) -> None:
    """Replace the rotary embeddings (modules with an ``inv_freq`` buffer) of a model on the
    meta device by :class:`ShapeOnlyRotaryEmbedding`."""
    for name, module in list(model.named_modules()):
        inv_freq = getattr(module, 'inv_freq', None)
        if name and isinstance(inv_freq, Tensor):
            parent, _, child = name.rpartition('.')
            setattr(model.get_submodule(parent), child,
                    ShapeOnlyRotaryEmbedding(2 * inv_freq.shape[-1]))


@MODELS.register_module()
class HFCausalLM(BaseModel):
    """A ``transformers`` causal LM as an mmengine model (see the module docstring).

    Args:
        config (dict | str, optional): a ``transformers`` config as a dict, with
            ``model_type`` (e.g. ``dict(model_type='llama', hidden_size=..., ...)``), or a
            local model directory (or its ``config.json``) whose config is read: the model is
            built from it with random weights. Exactly one of ``config`` and
            ``pretrained_path``.
        pretrained_path (str, optional): a local directory ``from_pretrained`` reads (nothing
            is downloaded here; pass a path).
        init_device (str, optional): the device the model is built on from ``config``;
            ``'meta'`` builds it without allocating its weights (shapes only: enough to build
            the search space and count parameters and MACs of a 7B model in seconds, not to
            train or evaluate it). Not with ``pretrained_path``.
        ignore_index (int): label ignored by the loss; ``pad_token_id`` of the config is mapped
            to it when ``ignore_pad`` is True.
        ignore_pad (bool): do not predict padding tokens. Defaults to True.
        from_pretrained_kwargs (dict, optional): more arguments of ``from_pretrained``
            (``torch_dtype``, ``attn_implementation``, ``trust_remote_code``, ...).
        data_preprocessor (dict, optional): mmengine data preprocessor config.
        init_cfg (dict, optional): initialisation config.
    """

    def __init__(self,
                 config: Union[Dict, str, None] = None,
                 pretrained_path: Optional[str] = None,
                 init_device: Optional[str] = None,
                 ignore_index: int = -100,
                 ignore_pad: bool = True,
                 from_pretrained_kwargs: Optional[Dict] = None,
                 data_preprocessor: Optional[Dict] = None,
                 init_cfg: Optional[Dict] = None) -> None:
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        if (config is None) == (pretrained_path is None):
            raise ValueError('HFCausalLM needs exactly one of config (a transformers config '
                             "dict with 'model_type') and pretrained_path (a local checkpoint "
                             f'directory); got config={config!r}, '
                             f'pretrained_path={pretrained_path!r}')
        if init_device is not None and pretrained_path is not None:
            raise ValueError(f'HFCausalLM: init_device={init_device!r} builds the model from '
                             'config without weights; with pretrained_path the weights are '
                             'loaded (pass from_pretrained_kwargs=dict(device_map=...) to '
                             'place them)')
        transformers = _transformers()
        kwargs = dict(from_pretrained_kwargs or {})
        if config is not None:
            hf_config = self._hf_config(transformers, config)
            with torch.device(init_device or 'cpu'):
                self.model = transformers.AutoModelForCausalLM.from_config(hf_config, **kwargs)
            if init_device == 'meta':
                _shape_only_rotary_embeddings(self.model)
        else:
            if not osp.isdir(pretrained_path):
                raise FileNotFoundError(
                    f"HFCausalLM: pretrained_path '{pretrained_path}' is not a local "
                    'directory; pass the directory of a Hugging Face checkpoint (nothing is '
                    'downloaded; a config may read it from an environment variable, as '
                    'configs/dms/llama_7b.py reads $LLAMA_PATH, or take it from --cfg-options '
                    'model.architecture.pretrained_path=DIR)')
            self.model = transformers.AutoModelForCausalLM.from_pretrained(
                pretrained_path, **kwargs)
        self.ignore_index = ignore_index
        self.ignore_pad = ignore_pad

    @staticmethod
    def _hf_config(transformers, config: Union[Dict, str]):
        """The ``transformers`` config of a dict with ``model_type`` or of a local path."""
        if isinstance(config, str):
            if not osp.exists(config):
                raise FileNotFoundError(f"HFCausalLM: config '{config}' is neither a config "
                                        'dict nor an existing model directory or config.json')
            return transformers.AutoConfig.from_pretrained(config)
        config = dict(config)
        model_type = config.pop('model_type', None)
        if model_type is None:
            raise ValueError("HFCausalLM's config needs 'model_type' (e.g. 'llama'), the "
                             'transformers architecture to build')
        return transformers.AutoConfig.for_model(model_type, **config)

    @property
    def hf_config(self):
        """The ``transformers`` config of the wrapped model."""
        return self.model.config

    def random_inputs(self, shape, generator: Optional[torch.Generator] = None) -> Tensor:
        """Token ids of ``shape`` ``(B, N)``, uniform over the vocabulary: the input of the
        export's output check (:func:`mmdms.apis.export.check_input`)."""
        device = next(self.model.parameters()).device
        ids = torch.randint(0, self.hf_config.vocab_size, tuple(shape), generator=generator)
        return ids.to(device)

    def logits(self, inputs: Tensor) -> Tensor:
        """The logits ``(B, N, vocab)`` of token ids ``(B, N)``.

        No check of ``inputs`` here: MMRazor's tracer traces this path with a proxy in place of
        ``inputs`` (the wrapped model is one leaf node of its graph).
        """
        return self.model(input_ids=inputs.long(), use_cache=False).logits

    def _token_nll(self, inputs: Tensor) -> tuple:
        """Next-token NLL ``(B, N - 1)`` and the mask of the predicted tokens."""
        if inputs.dim() != 2 or inputs.shape[1] < 2:
            raise ValueError('HFCausalLM takes token ids of shape (batch, tokens) with at '
                             f'least 2 tokens to predict the next one, got {tuple(inputs.shape)}')
        input_ids = inputs.long()
        logits = self.logits(input_ids)[:, :-1].float()
        labels = input_ids[:, 1:]
        valid = torch.ones_like(labels, dtype=torch.bool)
        pad = getattr(self.hf_config, 'pad_token_id', None)
        if self.ignore_pad and pad is not None:
            valid = labels != pad
        labels = labels.masked_fill(~valid, self.ignore_index)
        nll = F.cross_entropy(logits.transpose(1, 2), labels, ignore_index=self.ignore_index,
                              reduction='none')
        return nll, valid

    def forward(self,
                inputs: Tensor,
                data_samples: Optional[List] = None,
                mode: str = 'tensor') -> Union[Tensor, Dict[str, Tensor], List[Dict]]:
        """Logits (``'tensor'``), the LM loss (``'loss'``) or per-sample NLL sums and token
        counts (``'predict'``) of token ids ``inputs``; ``data_samples`` is not read."""
        if mode == 'tensor':
            return self.logits(inputs)
        if mode == 'loss':
            nll, valid = self._token_nll(inputs)
            return dict(loss=nll.sum() / valid.sum().clamp(min=1))
        if mode == 'predict':
            nll, valid = self._token_nll(inputs)
            return [dict(nll=float(n), num_tokens=int(v))
                    for n, v in zip(nll.detach().sum(dim=1), valid.sum(dim=1))]
        raise ValueError(f"Invalid mode '{mode}': HFCausalLM supports 'tensor', 'loss' and "
                         "'predict'")
