# Copyright (c) mmdms contributors. All rights reserved.
"""Export an exported DMS subnet (``subnet.json``, ``pruned.pth``, ``config.py``) to ONNX.

The ONNX graph is the network alone, as mmdeploy exports it: a classifier's logits, a
detector's raw head outputs (no box decoding, no NMS). Its input is the *preprocessed* image
batch (the data preprocessor's mean / std and channel order are applied before it; they are
stored in the model's metadata). The batch axis is dynamic.
"""
import importlib
import json
import os.path as osp
import re
import warnings
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn
from mmengine.config import Config
from mmengine.registry import MODELS, DefaultScope
from mmengine.runner.checkpoint import _load_checkpoint

from mmdms.structures import load_subnet
from mmdms.utils import atomic_file, load_state_dict_strictly

#: Largest relative difference (to the output's largest magnitude) between onnxruntime's and
#: PyTorch's outputs that the export accepts.
ONNX_TOLERANCE = 1e-4
#: The files of an exported subnet directory (``tools/export_subnet.py``).
SUBNET_FILES = ('subnet.json', 'pruned.pth', 'config.py')
DEPLOY_FIX = ('install the pinned versions of the # deploy section of '
              'requirements/optional.txt (pip install -r requirements/optional.txt '
              '-c requirements/cpu_pins.txt), or re-run the set-up (make setup)')


class DeployError(RuntimeError):
    """An input the ONNX export cannot use, or an exported graph that fails its check."""


def require_onnx() -> Tuple[object, object]:
    """Import ``onnx`` and ``onnxruntime``, or raise one error that names the fix.

    Returns:
        tuple: the ``onnx`` and ``onnxruntime`` modules.

    Raises:
        DeployError: either package is missing or does not import.
    """
    modules, problems = [], []
    for name in ('onnx', 'onnxruntime'):
        try:
            modules.append(importlib.import_module(name))
        except ImportError as e:
            problems.append(f'{name} ({e})')
    if problems:
        raise DeployError(f"The ONNX export needs {' and '.join(problems)}: {DEPLOY_FIX}")
    return tuple(modules)


def check_subnet_dir(subnet_dir: str) -> Dict:
    """Check that ``subnet_dir`` is a directory ``tools/export_subnet.py`` wrote.

    Returns:
        dict: its ``subnet.json``.

    Raises:
        DeployError: it is not a directory, or lacks one of :data:`SUBNET_FILES`, or its
            ``subnet.json`` is not a DMS subnet.
    """
    fix = ('export one with tools/export_subnet.py CONFIG SEARCH_CKPT --work-dir DIR, and '
           'pass DIR')
    if not osp.isdir(subnet_dir):
        raise DeployError(f"'{subnet_dir}' is not a directory: {fix}")
    missing = [f for f in SUBNET_FILES if not osp.isfile(osp.join(subnet_dir, f))]
    if missing:
        raise DeployError(f"'{subnet_dir}' is not an exported subnet directory (no "
                          f"{', '.join(missing)}): {fix}")
    try:
        return load_subnet(osp.join(subnet_dir, 'subnet.json'))
    except (ValueError, OSError) as e:  # SubnetError is a ValueError, JSONDecodeError too
        raise DeployError(f'{e}: {fix}') from e


def load_subnet_model(subnet_dir: str, checkpoint: Optional[str] = None
                      ) -> Tuple[nn.Module, Config]:
    """The static model of an exported subnet directory in eval mode, its weights loaded
    strictly from ``checkpoint``.

    Args:
        subnet_dir (str): a directory written by ``tools/export_subnet.py``.
        checkpoint (str, optional): weights of that model, e.g. a retraining's checkpoint;
            defaults to the directory's ``pruned.pth``.

    Returns:
        tuple: the model (a :class:`~mmdms.models.DMSSubnet`) and its ``config.py``.

    Raises:
        DeployError: ``subnet_dir`` is not an exported subnet, or ``checkpoint`` holds the
            weights of another model.
    """
    check_subnet_dir(subnet_dir)
    cfg = Config.fromfile(osp.join(subnet_dir, 'config.py'))
    model_cfg = cfg.model
    if cfg.get('data_preprocessor') is not None:
        model_cfg.setdefault('data_preprocessor', cfg.data_preprocessor)  # as the Runner does
    # the subnet of this directory, whatever path config.py was written with
    model_cfg.subnet = osp.join(subnet_dir, 'subnet.json')
    with DefaultScope.overwrite_default_scope(cfg.get('default_scope')):
        model = MODELS.build(model_cfg)
    checkpoint = checkpoint or osp.join(subnet_dir, 'pruned.pth')
    ckpt = _load_checkpoint(checkpoint, map_location='cpu')
    state = ckpt.get('state_dict', ckpt) if isinstance(ckpt, dict) else {}
    try:
        load_state_dict_strictly(model, {re.sub(r'^module\.', '', k): v
                                         for k, v in state.items()})
    except RuntimeError as e:
        raise DeployError(f"'{checkpoint}' does not hold the weights of the subnet in "
                          f"'{subnet_dir}' ({str(e).splitlines()[0]}); pass a checkpoint of "
                          'this subnet (its pruned.pth, or a retraining of its config.py)'
                          ) from e
    return model.eval(), cfg


def _flatten(output, name: str) -> List[Tuple[str, torch.Tensor]]:
    if isinstance(output, torch.Tensor):
        return [(name, output)]
    if isinstance(output, dict):
        output = list(output.values())
    if isinstance(output, (list, tuple)):
        return [item for i, out in enumerate(output) for item in _flatten(out, f'{name}_{i}')]
    return []


class NetworkOutputs(nn.Module):
    """An OpenMMLab model's ``tensor``-mode forward with its (nested) outputs flattened to a
    tuple of tensors, the form ONNX graphs have."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def output_names(self, x: torch.Tensor) -> List[str]:
        """The name of every output: ``output`` for one tensor, else ``output_<i>[_<j>]`` by
        its position in the nested output (e.g. YOLOv8: ``output_0_2`` = class scores of the
        third level)."""
        flat = _flatten(self.model(x, mode='tensor'), 'output')
        return ['output'] if len(flat) == 1 else [name for name, _ in flat]

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        return tuple(t for _, t in _flatten(self.model(x, mode='tensor'), 'output'))


def _relative_difference(actual: np.ndarray, expected: np.ndarray) -> float:
    if actual.shape != expected.shape:
        return float('inf')
    scale = max(float(np.abs(expected).max(initial=0.0)), 1e-12)
    return float(np.abs(actual - expected).max(initial=0.0)) / scale


def compare_with_onnxruntime(module: nn.Module, onnx_path: str, input_shape: Sequence[int],
                             batch_sizes: Sequence[int] = (1, 3), seed: int = 0) -> Dict:
    """Run ``onnx_path`` in a plain ``onnxruntime.InferenceSession`` (CPU) and ``module`` in
    PyTorch on the same random inputs, at each batch size.

    Returns:
        dict: batch size -> largest relative output difference over all outputs.
    """
    _, ort = require_onnx()
    session = ort.InferenceSession(onnx_path, providers=['CPUExecutionProvider'])
    input_name = session.get_inputs()[0].name
    generator = torch.Generator().manual_seed(seed)
    differences = {}
    for batch in batch_sizes:
        x = torch.randn((batch, *input_shape[1:]), generator=generator)
        with torch.no_grad():
            expected = [t.numpy() for t in module(x)]
        actual = session.run(None, {input_name: x.numpy()})
        if len(actual) != len(expected):
            differences[batch] = float('inf')
        else:
            differences[batch] = max(_relative_difference(a, e)
                                     for a, e in zip(actual, expected))
    return differences


def foreign_ops(onnx_model) -> List[str]:
    """The ops of an ONNX graph outside the standard ``ai.onnx`` domain (custom ops that a
    plain onnxruntime could not run), as ``domain::op``."""
    return sorted({f'{n.domain}::{n.op_type}' for n in onnx_model.graph.node
                   if n.domain not in ('', 'ai.onnx')})


def _preprocessing_metadata(model: nn.Module) -> Dict[str, str]:
    preprocessor = getattr(getattr(model, 'architecture', model), 'data_preprocessor', None)
    meta = {}
    for key in ('mean', 'std'):
        value = getattr(preprocessor, key, None)
        if isinstance(value, torch.Tensor):
            meta[key] = json.dumps([round(v, 6) for v in value.flatten().tolist()])
    # mmpretrain's ClsDataPreprocessor says to_rgb, mmengine's ImgDataPreprocessor (mmdet,
    # mmyolo) _channel_conversion: both swap the first and last channel of the image
    for key in ('to_rgb', '_channel_conversion'):
        if hasattr(preprocessor, key):
            meta['swap_rb'] = json.dumps(bool(getattr(preprocessor, key)))
    return meta


def trace_to_onnx(model: nn.Module, path: str, input_shape: Sequence[int],
                  opset_version: int = 17) -> List[str]:
    """Trace an OpenMMLab model's ``tensor`` mode into an ONNX file with a dynamic batch axis
    (``torch.onnx.export(dynamo=False)``, the TorchScript exporter; no check, no metadata).

    Args:
        model (nn.Module): a model whose ``forward(x, mode='tensor')`` gives its network
            outputs (an mmpretrain / mmdet / mmyolo model, a :class:`~mmdms.models.DMSSubnet`).
        path (str): the ONNX file to write.
        input_shape (Sequence[int]): ``(N, C, H, W)``; only C, H and W matter.
        opset_version (int): the ONNX opset.

    Returns:
        list[str]: the output names (see :meth:`NetworkOutputs.output_names`); the input is
        ``input``.
    """
    module = NetworkOutputs(model).eval()
    # traced at batch 2: a batch of 1 lets tracing bake size-1 squeezes into the graph
    example = torch.randn((2, *input_shape[1:]), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        output_names = module.output_names(example)
    dynamic_axes = {name: {0: 'batch'} for name in ['input', *output_names]}
    with warnings.catch_warnings(), torch.no_grad():
        # the deprecation notice of the TorchScript exporter, and tracer warnings about Python
        # values taken from shapes (export_onnx's batch-1 / batch-3 check catches a graph that
        # baked in a shape)
        warnings.simplefilter('ignore', DeprecationWarning)
        warnings.simplefilter('ignore', torch.jit.TracerWarning)
        torch.onnx.export(module, (example, ), path, dynamo=False, input_names=['input'],
                          output_names=output_names, dynamic_axes=dynamic_axes,
                          opset_version=opset_version)
    return output_names


def export_onnx(subnet_dir: str,
                output: Optional[str] = None,
                checkpoint: Optional[str] = None,
                input_shape: Optional[Sequence[int]] = None,
                opset_version: int = 17,
                batch_sizes: Sequence[int] = (1, 3),
                tolerance: float = ONNX_TOLERANCE,
                force: bool = False) -> Dict:
    """Export the static model of an exported subnet directory to ONNX, with a dynamic batch
    axis, and check it against PyTorch with onnxruntime.

    The graph is traced by :func:`trace_to_onnx` from the model's ``tensor`` mode: logits for
    a classifier, the raw outputs of backbone, neck and head for a detector (post-processing
    stays outside, as in mmdeploy). It is written to a temporary file next to ``output`` and
    renamed into place only after onnxruntime, in a plain ``InferenceSession``, reproduced
    PyTorch's outputs at every batch size within ``tolerance``; a failure leaves no
    (half-written) file behind. The data preprocessor's mean, std and channel swap are stored
    in the model's metadata.

    Args:
        subnet_dir (str): a directory written by ``tools/export_subnet.py``.
        output (str, optional): the ONNX file; defaults to ``subnet_dir/model.onnx``.
        checkpoint (str, optional): the weights, e.g. a retraining's checkpoint of the
            directory's ``config.py``; defaults to its ``pruned.pth``.
        input_shape (Sequence[int], optional): ``(N, C, H, W)`` to trace at (only C, H, W
            matter: the batch is dynamic); defaults to ``subnet.json``'s ``input_shape``.
        opset_version (int): the ONNX opset.
        batch_sizes (Sequence[int]): the batch sizes the graph is checked at.
        tolerance (float): the largest accepted relative output difference.
        force (bool): replace an existing ``output``.

    Returns:
        dict: ``path``, ``input_shape``, ``input_name``, ``output_names``, ``opset_version``,
        ``max_rel_diff`` (batch size -> difference) and ``tolerance``.

    Raises:
        DeployError: ``subnet_dir`` is not an exported subnet, onnx / onnxruntime are missing,
            ``checkpoint`` is another model's, ``output`` exists without ``force``, the graph
            holds a custom op, or onnxruntime computes something else than PyTorch.
    """
    onnx, _ = require_onnx()  # before the slow part
    subnet_dir = osp.abspath(subnet_dir)
    subnet = check_subnet_dir(subnet_dir)
    output = osp.abspath(output or osp.join(subnet_dir, 'model.onnx'))
    if osp.lexists(output) and not force:
        raise DeployError(f"'{output}' already exists; pass --force (force=True) to replace it")
    input_shape = list(input_shape or subnet['input_shape'])
    model, _ = load_subnet_model(subnet_dir, checkpoint)
    with atomic_file(output, force=True) as tmp:
        output_names = trace_to_onnx(model, tmp, input_shape, opset_version)
        graph = onnx.load(tmp)
        custom = foreign_ops(graph)
        if custom:
            raise DeployError(f"The ONNX graph holds ops outside the standard domain "
                              f"({', '.join(custom)}), which a plain onnxruntime cannot run")
        meta = dict(_preprocessing_metadata(model), producer='mmdms',
                    input_layout='NCHW float32, preprocessed (mean / std applied)',
                    input_hw=json.dumps(input_shape[2:]), macs=str(subnet.get('macs')),
                    params=str(subnet.get('params')))
        for key, value in meta.items():
            graph.metadata_props.add(key=key, value=value)
        onnx.save(graph, tmp)
        differences = compare_with_onnxruntime(NetworkOutputs(model).eval(), tmp, input_shape,
                                               batch_sizes)
        worst = max(differences.values())
        if not worst <= tolerance:
            raise DeployError(
                f'onnxruntime computes something else than PyTorch (max relative difference '
                f"{', '.join(f'{d:.3g} at batch {b}' for b, d in differences.items())}; "
                f'tolerance {tolerance:g}): an op the exporter translates differently?')
    return dict(path=output, input_shape=input_shape, input_name='input',
                output_names=output_names, opset_version=opset_version,
                max_rel_diff=differences, tolerance=tolerance)
