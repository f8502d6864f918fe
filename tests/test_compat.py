# Copyright (c) mmdms contributors. All rights reserved.
"""Each shim of mmdms.compat is needed: without it the quoted error comes back.

Each case runs a fresh interpreter twice, once with the shim skipped through
``MMDMS_COMPAT_SKIP`` (expects the error) and once with all shims (expects success); the two
run side by side (each is mostly a single-threaded import of the OpenMMLab stack).
"""
import os
import subprocess
import sys
import textwrap

import pytest

from mmdms import compat

SINGLE_PROCESS_GROUP = """
import os
os.environ.update(RANK='0', WORLD_SIZE='1', LOCAL_RANK='0', MASTER_ADDR='127.0.0.1',
                  MASTER_PORT=str(__import__('random').randint(20000, 40000)))
"""

CASES = {
    'torchvision_fake_ops': ('import mmdms, torchvision, mmpretrain',
                             'operator torchvision::nms does not exist'),
    'mmrazor_quantization_imports': ('import mmdms, mmrazor.models',
                                     '`torch>=1.13` is not installed properly'),
    'checkpoint_safe_globals': (textwrap.dedent("""
        import mmdms, tempfile, os, numpy as np
        from mmengine.logging import MessageHub
        from mmengine.runner.checkpoint import load_checkpoint, save_checkpoint
        import torch
        hub = MessageHub.get_instance('compat')
        hub.update_scalar('train/loss', np.float64(0.5))
        path = os.path.join(tempfile.mkdtemp(), 'ckpt.pth')
        save_checkpoint({'state_dict': torch.nn.Linear(2, 2).state_dict(),
                         'meta': {'message_hub': hub.state_dict()}}, path)
        from mmengine.runner.checkpoint import _load_checkpoint
        ckpt = _load_checkpoint(path, map_location='cpu')
        assert ckpt['meta']['message_hub']['log_scalars']['train/loss'].mean() == 0.5
        """), 'Unsupported global: GLOBAL mmengine.logging.history_buffer.HistoryBuffer'),
    'cpu_distributed_init': (SINGLE_PROCESS_GROUP + textwrap.dedent("""
        import mmdms, torch
        from mmengine.dist import init_dist
        init_dist('pytorch', backend='nccl')
        assert torch.distributed.get_backend() == 'gloo'
        """), "has no attribute '_cuda_setDevice'"),
    # what srun sets for one task (scontrol is not needed when MASTER_ADDR is set)
    'cpu_slurm_init': (textwrap.dedent("""
        import os
        os.environ.update(SLURM_PROCID='0', SLURM_NTASKS='1', SLURM_LOCALID='0',
                          SLURM_NODELIST='localhost', MASTER_ADDR='127.0.0.1',
                          MASTER_PORT=str(__import__('random').randint(20000, 40000)))
        import mmdms, torch
        from mmengine.dist import init_dist
        init_dist('slurm', backend='nccl')
        assert torch.distributed.get_backend() == 'gloo' and os.environ['RANK'] == '0'
        """), "has no attribute '_cuda_setDevice'"),
    'cpu_ddp_sync_batchnorm': (SINGLE_PROCESS_GROUP + textwrap.dedent("""
        import mmdms, torch
        torch.distributed.init_process_group('gloo')
        from mmengine.model import MMDistributedDataParallel
        model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), torch.nn.SyncBatchNorm(4))
        weight = model[1].weight
        ddp = MMDistributedDataParallel(module=model)
        assert not isinstance(model[1], torch.nn.SyncBatchNorm) and model[1].weight is weight
        ddp(torch.randn(2, 3, 4, 4)).sum().backward()
        """), 'SyncBatchNorm layers only work with GPU modules'),
    # needs transformers >= 4.54 (the llm extra) and pycocotools
    'mmpretrain_multimodal_transformers': ('import mmdms, mmpretrain.models',
                                           'NoneType takes no arguments'),
    'cpu_ddp_device_ids': (SINGLE_PROCESS_GROUP + textwrap.dedent("""
        import mmdms, torch
        torch.distributed.init_process_group('gloo')
        from mmengine.model import MMDistributedDataParallel
        MMDistributedDataParallel(module=torch.nn.Linear(2, 2), device_ids=[0])
        """), 'device_ids and output_device arguments only work with'),
    'configs_with_main_guarded_imports': (textwrap.dedent("""
        import mmdms, os.path as osp, mmpretrain
        from mmengine.config import Config
        cfg = Config.fromfile(osp.join(osp.dirname(mmpretrain.__file__), '.mim', 'configs',
                                       'replknet', 'replknet-31B_32xb64_in1k.py'))
        assert cfg.model.backbone.type == 'RepLKNet' and 'build_classifier' not in cfg
        """), 'configuration file type in the inheritance chain must match'),
}


def start_python(code: str, skip: str = '') -> subprocess.Popen:
    env = dict(os.environ, MMDMS_COMPAT_SKIP=skip, OMP_NUM_THREADS='1')
    return subprocess.Popen([sys.executable, '-c', code], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def finish(process: subprocess.Popen) -> subprocess.CompletedProcess:
    try:
        stdout, stderr = process.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        process.kill()
        raise
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def run_python(code: str, skip: str = '') -> subprocess.CompletedProcess:
    return finish(start_python(code, skip))


def test_every_shim_has_a_case():
    assert set(CASES) == set(compat.PATCHES)


@pytest.mark.parametrize('name', sorted(CASES))
def test_shim_is_needed_and_sufficient(name):
    if name == 'mmpretrain_multimodal_transformers':
        transformers = pytest.importorskip('transformers')
        pytest.importorskip('pycocotools')
        if tuple(int(p) for p in transformers.__version__.split('.')[:2]) < (4, 54):
            pytest.skip('the shim is for transformers >= 4.54')
    code, error = CASES[name]
    without, with_all = start_python(code, skip=name), start_python(code)
    without, with_all = finish(without), finish(with_all)
    assert without.returncode != 0 and error in without.stderr, without.stderr[-2000:]
    assert with_all.returncode == 0, with_all.stderr[-2000:]


def test_unknown_skip_name_is_refused():
    result = run_python('import mmdms', skip='no_such_shim')
    assert result.returncode != 0 and 'MMDMS_COMPAT_SKIP names unknown shims' in result.stderr
