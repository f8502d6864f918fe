# Copyright (c) mmdms contributors. All rights reserved.
"""Runtime shims that let mmrazor 1.0 / mmengine 0.10 / torchvision run on torch 2.13 CPU.

Every shim is a function registered in :data:`PATCHES` under a short name. ``import mmdms`` calls
:func:`apply_all` once. No installed file is edited: each shim adds a missing symbol or wraps one
function, and only when the condition it fixes is present.

Setting ``MMDMS_COMPAT_SKIP=name1,name2`` skips shims by name; the tests use it to show each one is
needed (the quoted error comes back without it).
"""
import functools
import importlib.util
import os
import sys
from typing import Callable, Dict, List

import torch

PATCHES: Dict[str, Callable[[], None]] = {}
APPLIED: List[str] = []
# Keeps the ``torchvision`` op-schema library alive for the life of the process.
_TORCHVISION_LIBRARY = None


def _patch(name: str) -> Callable:

    def register(fn: Callable[[], None]) -> Callable[[], None]:
        PATCHES[name] = fn
        return fn

    return register


def _torchvision_extension_loads(spec) -> bool:
    """Whether torchvision's compiled ``_C`` library loads with this torch."""
    lib_dir = os.path.dirname(spec.origin)
    candidates = [f for f in os.listdir(lib_dir) if f.startswith('_C') and f.endswith(('.so', '.pyd'))]
    if not candidates:
        return False
    try:
        torch.ops.load_library(os.path.join(lib_dir, candidates[0]))
        return True
    except (OSError, ImportError, RuntimeError):
        return False


@_patch('torchvision_fake_ops')
def _define_torchvision_op_schemas() -> None:
    """Let ``import torchvision`` succeed when its C extension cannot load.

    The registry's torchvision 0.28.0 wheel links libtorch_cuda; with CPU torch its ``_C.so`` fails
    to load and ``torchvision/_meta_registrations.py`` then raises
    ``RuntimeError: operator torchvision::nms does not exist`` from two unconditional
    ``torch.library.register_fake("torchvision::nms"/"torchvision::qnms")`` calls. Defining the two
    schemas (not kernels) first makes those registrations succeed; ``torchvision.ops.nms`` still
    has no kernel, mmcv's own ops are used instead. Where the extension loads, this does nothing.
    """
    global _TORCHVISION_LIBRARY
    if 'torchvision' in sys.modules or _TORCHVISION_LIBRARY is not None:
        return
    spec = importlib.util.find_spec('torchvision')
    if spec is None or _torchvision_extension_loads(spec):
        return
    lib = torch.library.Library('torchvision', 'DEF')  # noqa: TOR901
    lib.define('nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor')
    lib.define('qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor')
    _TORCHVISION_LIBRARY = lib


@_patch('mmrazor_quantization_imports')
def _restore_removed_quantization_symbols() -> None:
    """Re-add the torch.ao.quantization symbols mmrazor 1.0 imports at module level.

    ``import mmrazor.models`` fails with ``ImportError: \`torch>=1.13\` is not installed properly, plz check.``
    because torch removed ``reverse2``, ``reverse3`` and ``reverse_sequential_wrapper2`` from
    ``torch.ao.quantization.fuser_method_mappings``; next
    ``module 'torch.ao.quantization.backend_config' has no attribute 'utils'`` and
    ``'BackendPatternConfig' object has no attribute '_set_overwrite_output_fake_quantize'`` (and
    ``_set_input_output_observed``, ``_set_overwrite_output_observer``). They are used only by mmrazor's quantization configs, which
    DMS never builds; the re-added definitions follow torch 1.13's.
    """
    from torch.ao.quantization import fuser_method_mappings as fmm
    import torch.ao.quantization.backend_config.utils  # noqa: F401  (binds the attribute)
    from torch.ao.quantization.backend_config import BackendPatternConfig

    def reverse_sequential_wrapper2(sequential):

        def fuser_method(is_qat, m1, m2):
            return sequential(m2, m1)

        return fuser_method

    def reverse2(f):

        def reversed_fn(is_qat, x, y):
            return f(is_qat, y, x)

        return reversed_fn

    def reverse3(f):

        def reversed_fn(is_qat, x, w):
            y, z = w
            return f(is_qat, z, y, x)

        return reversed_fn

    for fn in (reverse_sequential_wrapper2, reverse2, reverse3):
        if not hasattr(fmm, fn.__name__):
            setattr(fmm, fn.__name__, fn)

    def _set_flag(attr: str):

        def setter(self, value: bool):
            setattr(self, attr, value)
            return self

        return setter

    for name, attr in (('_set_overwrite_output_fake_quantize', '_overwrite_output_fake_quantize'),
                       ('_set_overwrite_output_observer', '_overwrite_output_observer'),
                       ('_set_input_output_observed', '_input_output_observed')):
        if not hasattr(BackendPatternConfig, name):
            setattr(BackendPatternConfig, name, _set_flag(attr))


@_patch('checkpoint_safe_globals')
def _allow_mmengine_checkpoint_globals() -> None:
    """Allow-list the non-tensor objects mmengine writes into checkpoints.

    torch >= 2.6 loads with ``weights_only=True`` by default, so resuming fails with
    ``UnpicklingError: Weights only load failed ... Unsupported global:
    mmengine.logging.history_buffer.HistoryBuffer``. The message hub stores ``HistoryBuffer``
    objects holding numpy arrays; only those types are allowed, ``weights_only`` stays on.
    ``HistoryBuffer.__getstate__`` also pickles its statistic methods as
    ``getattr(HistoryBuffer, 'min')``, so ``builtins.getattr`` is allowed too: the weights-only
    unpickler still refuses to *call* anything getattr returns unless it is itself allow-listed.
    """
    import numpy as np
    from mmengine.logging import HistoryBuffer

    safe = [HistoryBuffer, getattr, np.ndarray, np.dtype, np.core.multiarray._reconstruct,
            np.core.multiarray.scalar]
    safe += [type(np.dtype(t)) for t in ('float64', 'float32', 'float16', 'int64', 'int32', 'bool')]
    torch.serialization.add_safe_globals(safe)


@_patch('cpu_distributed_init')
def _init_dist_pytorch_without_cuda() -> None:
    """Start ``launcher='pytorch'`` on a machine without CUDA, with the gloo backend.

    mmengine calls ``torch.cuda.set_device(local_rank)`` unconditionally, which fails on a CPU
    build with ``AttributeError: module 'torch._C' has no attribute '_cuda_setDevice'``; and the
    configs' default backend ``nccl`` needs CUDA. Without CUDA this skips ``set_device`` and uses
    ``gloo``; with CUDA (or another accelerator) mmengine's own function runs unchanged.
    """
    import mmengine.dist.utils as dist_utils

    original = dist_utils._init_dist_pytorch
    if getattr(original, '_mmdms_patched', False):
        return

    @functools.wraps(original)
    def init_dist_pytorch(backend: str = 'nccl', init_backend: str = 'torch', **kwargs) -> None:
        from mmengine.device import is_mlu_available, is_musa_available, is_npu_available
        if (torch.cuda.is_available() or is_mlu_available() or is_npu_available()
                or is_musa_available() or init_backend != 'torch'):
            return original(backend, init_backend=init_backend, **kwargs)
        if backend == 'nccl':
            backend = 'gloo'
        torch.distributed.init_process_group(backend=backend, **kwargs)

    init_dist_pytorch._mmdms_patched = True
    dist_utils._init_dist_pytorch = init_dist_pytorch


@_patch('cpu_slurm_init')
def _init_dist_slurm_without_cuda() -> None:
    """Start ``launcher='slurm'`` (``tools/slurm_train.sh``) on nodes without CUDA, with gloo.

    mmengine's ``_init_dist_slurm`` sets up ``MASTER_ADDR`` / ``RANK`` / ``WORLD_SIZE`` from the
    SLURM variables and then calls ``torch.cuda.set_device(local_rank)``, which fails on a CPU
    build with ``AttributeError: module 'torch._C' has no attribute '_cuda_setDevice'``. Without
    CUDA this runs mmengine's function with ``set_device`` made a no-op for the call and
    ``nccl`` replaced by ``gloo``; with CUDA (or MLU) mmengine's function runs unchanged.
    """
    import mmengine.dist.utils as dist_utils

    original = dist_utils._init_dist_slurm
    if getattr(original, '_mmdms_patched', False):
        return

    @functools.wraps(original)
    def init_dist_slurm(backend: str = 'nccl', port=None, init_backend: str = 'torch',
                        **kwargs) -> None:
        from mmengine.device import is_mlu_available
        if torch.cuda.is_available() or is_mlu_available() or init_backend != 'torch':
            return original(backend, port=port, init_backend=init_backend, **kwargs)
        if backend == 'nccl':
            backend = 'gloo'
        set_device = torch.cuda.set_device
        torch.cuda.set_device = lambda device: None
        try:
            original(backend, port=port, init_backend=init_backend, **kwargs)
        finally:
            torch.cuda.set_device = set_device

    init_dist_slurm._mmdms_patched = True
    dist_utils._init_dist_slurm = init_dist_slurm


@_patch('cpu_ddp_sync_batchnorm')
def _ddp_reverts_sync_batchnorm_on_cpu() -> None:
    """Train a SyncBN model (mmyolo's SyncBN configs, DMSSyncBatchNorm) in DDP on CPU.

    torch's DDP refuses it: ``ValueError: SyncBatchNorm layers only work with GPU modules``
    (and SyncBatchNorm's forward has no CPU kernels: ``SyncBatchNorm expected input tensor to be
    on GPU``). For a module whose parameters are all on the CPU, the SyncBatchNorm layers are
    turned into BatchNorm before wrapping (``mmengine.model.revert_sync_batchnorm``, what
    mmengine's Runner does for a single process): the same parameters and buffers, statistics
    per process. With GPU modules DDP is built unchanged.
    """
    from mmengine.logging import print_log
    from mmengine.model import MMDistributedDataParallel, revert_sync_batchnorm

    original = MMDistributedDataParallel.__init__
    if getattr(original, '_mmdms_sync_bn_patched', False):
        return

    @functools.wraps(original)
    def __init__(self, module, *args, **kwargs):
        devices = {p.device.type for p in module.parameters()}
        if devices <= {'cpu'} and any(isinstance(m, torch.nn.SyncBatchNorm)
                                      for m in module.modules()):
            print_log('SyncBatchNorm on CPU: reverted to BatchNorm for DistributedDataParallel '
                      '(no CPU kernels); each process normalises with its own statistics',
                      logger='current', level=30)
            module = revert_sync_batchnorm(module)
        original(self, module, *args, **kwargs)

    __init__._mmdms_sync_bn_patched = True
    MMDistributedDataParallel.__init__ = __init__


@_patch('cpu_ddp_device_ids')
def _ddp_without_device_ids_on_cpu() -> None:
    """Wrap a CPU model in DDP although the Runner passes ``device_ids=[LOCAL_RANK]``.

    mmengine's ``Runner.wrap_model`` always passes ``device_ids``; torch then raises
    ``ValueError: DistributedDataParallel device_ids and output_device arguments only work with
    single-device/multiple-device GPU modules or CPU modules, but got device_ids [0] ...``.
    For a module whose parameters are all on the CPU, ``device_ids`` is dropped (it must be None).
    """
    from mmengine.model import MMDistributedDataParallel

    original = MMDistributedDataParallel.__init__
    if getattr(original, '_mmdms_patched', False):
        return

    @functools.wraps(original)
    def __init__(self, module, *args, **kwargs):
        devices = {p.device.type for p in module.parameters()}
        if kwargs.get('device_ids') is not None and devices <= {'cpu'}:
            kwargs['device_ids'] = None
            kwargs.pop('output_device', None)
        original(self, module, *args, **kwargs)

    __init__._mmdms_patched = True
    MMDistributedDataParallel.__init__ = __init__


@_patch('mmpretrain_multimodal_transformers')
def _skip_mmpretrain_multimodal_with_new_transformers() -> None:
    """Keep ``import mmpretrain.models`` working when transformers >= 4.54 is installed.

    mmpretrain 1.2 imports its multimodal models (BLIP, OFA, ...) whenever transformers and
    pycocotools are installed, and they import ``GenerationMixin`` and
    ``find_pruneable_heads_and_indices`` from ``transformers.modeling_utils``, which 4.54+ no
    longer has there: ``ImportError: cannot import name 'GenerationMixin' from
    'transformers.modeling_utils'`` (after ``TypeError: NoneType takes no arguments`` from
    BLIP). mmdms uses none of them; they are registered as mmpretrain's placeholders instead
    (building one asks for the multimodal dependencies). Nothing happens with an older
    transformers, without transformers, or once ``mmpretrain.models`` is imported.
    """
    import importlib.metadata as md
    if 'mmpretrain.models' in sys.modules or importlib.util.find_spec('mmpretrain') is None:
        return
    try:
        version = md.version('transformers')
    except md.PackageNotFoundError:
        return
    major_minor = tuple(int(p) for p in version.split('.')[:2] if p.isdigit())
    if major_minor < (4, 54):
        return
    from mmpretrain.utils import dependency
    dependency.WITH_MULTIMODAL = False


@_patch('configs_with_main_guarded_imports')
def _load_configs_whose_import_serves_only_their_main() -> None:
    """Load mmpretrain 1.2's RepLKNet configs with mmengine 0.10.

    ``_base_/models/replknet-31B_in1k.py`` (and ``replknet-XL_in1k.py``) import
    ``build_classifier`` for a demo under ``if __name__ == '__main__'``; mmengine 0.10 takes any
    non-builtin import for a new-style (lazy-import) config, and every RepLKNet config then fails:
    ``RuntimeError: The configuration file type in the inheritance chain must match the current
    configuration file type, either "lazy_import" or non-"lazy_import"``. ``Config.fromfile`` is
    wrapped to retry such a file as a plain config (``lazy_import=False``), only after that error
    and only when the caller left ``lazy_import`` to the detection; a chain that really mixes the
    two styles fails the retry too, and the original error is raised.
    """
    from mmengine.config import Config
    fromfile = Config.fromfile
    if getattr(fromfile, 'mmdms_retries_plain', False):
        return

    @functools.wraps(fromfile)
    def fromfile_retrying_plain(filename, *args, **kwargs):
        try:
            return fromfile(filename, *args, **kwargs)
        except RuntimeError as error:
            if 'configuration file type in the inheritance chain must match' not in str(error) \
                    or len(args) >= 4 or kwargs.get('lazy_import') is not None:
                raise
            try:
                return fromfile(filename, *args, **dict(kwargs, lazy_import=False))
            except Exception:
                raise error from None

    fromfile_retrying_plain.mmdms_retries_plain = True
    Config.fromfile = staticmethod(fromfile_retrying_plain)


def apply_all() -> List[str]:
    """Apply every shim not named in ``MMDMS_COMPAT_SKIP``; return the names applied."""
    skip = {s.strip() for s in os.environ.get('MMDMS_COMPAT_SKIP', '').split(',') if s.strip()}
    unknown = skip - set(PATCHES)
    if unknown:
        raise ValueError(f'MMDMS_COMPAT_SKIP names unknown shims {sorted(unknown)}; '
                         f'known: {sorted(PATCHES)}')
    for name, fn in PATCHES.items():
        if name not in skip and name not in APPLIED:
            fn()
            APPLIED.append(name)
    return list(APPLIED)
