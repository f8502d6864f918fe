# Copyright (c) mmdms contributors. All rights reserved.
"""export_onnx on randomly pruned subnets of each family kind (the digits demo ResNet, a
MobileNetV2, a DeiT, a YOLOv8), each small: the graph has a dynamic batch and standard ops only,
and a plain onnxruntime session computes what the PyTorch static model does, at batch 1 and 3.
Bad input is one clear error and leaves no model.onnx."""
import os
import os.path as osp
import subprocess
import sys

import numpy as np
import pytest
import torch

import mmdms.deploy.onnx as onnx_module
from dms_test_utils import randomize_structure
from mmdms.apis import build_search_model, export_subnet, load_config
from mmdms.deploy import DeployError, NetworkOutputs, export_onnx, load_subnet_model

onnx = pytest.importorskip('onnx')
ort = pytest.importorskip('onnxruntime')

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIGS = osp.join(REPO, 'configs', 'dms')


def demo_input(size):
    return {'model.mutator.parse_cfg.demo_input': (1, 3, size, size)}


FAMILIES = {
    'digits_resnet': (osp.join(CONFIGS, 'demo', 'digits_search.py'), {}),
    # the MobileNetV2 search space (inverted residuals, depthwise convs) at half width, 32 px
    'mobilenet_v2': (osp.join(CONFIGS, 'mobilenet_v2.py'), {
        **demo_input(32), 'model.architecture.backbone.widen_factor': 0.5,
        'model.architecture.backbone.deepen_factor': 1.0,
        'model.architecture.head.in_channels': 1280}),
    # DeiT with 3 layers of 3 heads of 16 dims (a 2x2 patch grid at 32 px)
    'deit': (osp.join(CONFIGS, 'deit_tiny.py'), {
        **demo_input(32), 'model.architecture.backbone.img_size': 32,
        'model.architecture.backbone.arch': dict(embed_dims=48, num_layers=3, num_heads=3,
                                                 feedforward_channels=96),
        'model.architecture.head.in_channels': 48}),
    # YOLOv8 at YOLOv8-n's depth and width, 64 px
    'yolov8': (osp.join(CONFIGS, 'yolov8_n.py'), {
        **demo_input(64),
        **{f'model.architecture.{part}.{key}': value
           for part in ('backbone', 'neck')
           for key, value in (('deepen_factor', 0.33), ('widen_factor', 0.25))},
        'model.architecture.bbox_head.head_module.widen_factor': 0.25}),
}


def exported_subnet(name: str, work: str, seed: int = 0) -> str:
    """A randomly pruned subnet of a family, exported by export_subnet into ``work``."""
    config, options = FAMILIES[name]
    torch.manual_seed(seed)
    search = randomize_structure(build_search_model(load_config(config, options)), seed=seed)
    checkpoint = osp.join(work, 'search.pth')
    torch.save(dict(state_dict=search.state_dict()), checkpoint)
    subnet_dir = osp.join(work, 'subnet')
    export_subnet(config, checkpoint, subnet_dir, cfg_options=options)
    return subnet_dir


@pytest.fixture(scope='module')
def digits_subnet(tmp_path_factory):
    return exported_subnet('digits_resnet', str(tmp_path_factory.mktemp('digits')))


def check_against_pytorch(subnet_dir, onnx_path, input_shape):
    graph = onnx.load(onnx_path)
    assert all(node.domain in ('', 'ai.onnx') for node in graph.graph.node)
    batch_dim = graph.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch_dim.dim_param == 'batch' and not batch_dim.HasField('dim_value')

    session = ort.InferenceSession(onnx_path, providers=['CPUExecutionProvider'])
    model = NetworkOutputs(load_subnet_model(subnet_dir)[0])
    rng = np.random.default_rng(1)
    for batch in (1, 3):
        x = rng.standard_normal((batch, *input_shape[1:])).astype(np.float32)
        actual = session.run(None, {session.get_inputs()[0].name: x})
        with torch.no_grad():
            expected = [t.numpy() for t in model(torch.from_numpy(x))]
        assert len(actual) == len(expected)
        for a, e in zip(actual, expected):
            assert a.shape == e.shape and a.shape[0] == batch
            np.testing.assert_allclose(a, e, rtol=0, atol=1e-4 * np.abs(e).max())


@pytest.mark.parametrize('name', ['mobilenet_v2', 'deit', 'yolov8'])
def test_family_subnet_exports_to_onnx(name, tmp_path):
    subnet_dir = exported_subnet(name, str(tmp_path), seed=1)
    result = export_onnx(subnet_dir)
    assert result['path'] == osp.join(subnet_dir, 'model.onnx')
    assert all(d <= 1e-4 for d in result['max_rel_diff'].values())
    assert sorted(result['max_rel_diff']) == [1, 3]
    check_against_pytorch(subnet_dir, result['path'], result['input_shape'])
    if name == 'yolov8':  # the raw head outputs: class scores and boxes of 3 levels
        assert len(result['output_names']) == 6
    else:  # logits
        assert result['output_names'] == ['output']


def test_digits_subnet_exports_and_runs_without_mmdms(digits_subnet, tmp_path):
    path = str(tmp_path / 'digits.onnx')
    result = export_onnx(digits_subnet, path)
    assert result['input_shape'] == [1, 3, 16, 16] and result['output_names'] == ['output']
    check_against_pytorch(digits_subnet, path, result['input_shape'])
    metadata = {p.key: p.value for p in onnx.load(path).metadata_props}
    assert metadata['producer'] == 'mmdms' and 'mean' in metadata and 'std' in metadata

    script = ('import sys, numpy as np, onnxruntime as ort\n'
              f's = ort.InferenceSession({path!r}, providers=["CPUExecutionProvider"])\n'
              'out = s.run(None, {"input": np.zeros((2, 3, 16, 16), np.float32)})[0]\n'
              'assert "mmdms" not in sys.modules and "torch" not in sys.modules\n'
              'print(out.shape)\n')
    run = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True,
                         cwd=str(tmp_path), env=dict(os.environ, PYTHONPATH=''), timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip() == '(2, 10)'


def test_not_a_subnet_dir_is_one_clear_error(tmp_path):
    (tmp_path / 'subnet.json').write_text('{}')
    with pytest.raises(DeployError, match=r'no pruned\.pth, config\.py.*tools/export_subnet\.py'):
        export_onnx(str(tmp_path))
    with pytest.raises(DeployError, match='is not a directory'):
        export_onnx(str(tmp_path / 'missing'))
    assert os.listdir(tmp_path) == ['subnet.json']


def test_missing_onnxruntime_names_the_fix(digits_subnet, monkeypatch):
    monkeypatch.setitem(sys.modules, 'onnxruntime', None)  # import onnxruntime fails
    with pytest.raises(DeployError, match=r'needs onnxruntime .*requirements/optional\.txt'):
        export_onnx(digits_subnet)
    assert not osp.exists(osp.join(digits_subnet, 'model.onnx'))


def test_checkpoint_of_another_model_is_one_clear_error(digits_subnet, tmp_path):
    search_checkpoint = osp.join(osp.dirname(digits_subnet), 'search.pth')
    with pytest.raises(DeployError, match=r'does not hold the weights of the subnet'):
        export_onnx(digits_subnet, str(tmp_path / 'model.onnx'), checkpoint=search_checkpoint)
    assert os.listdir(tmp_path) == []


def test_existing_file_needs_force_and_a_failed_check_leaves_it(digits_subnet, tmp_path,
                                                                monkeypatch):
    path = tmp_path / 'model.onnx'
    path.write_text('mine')
    with pytest.raises(DeployError, match='--force'):
        export_onnx(digits_subnet, str(path))
    assert path.read_text() == 'mine'

    monkeypatch.setattr(onnx_module, 'compare_with_onnxruntime', lambda *a, **k: {1: 0.5})
    with pytest.raises(DeployError, match='onnxruntime computes something else'):
        export_onnx(digits_subnet, str(path), force=True)
    assert os.listdir(tmp_path) == ['model.onnx'] and path.read_text() == 'mine'


def test_cli_writes_model_onnx_and_reports_errors(digits_subnet, tmp_path):
    env = dict(os.environ, PYTHONPATH=REPO, OMP_NUM_THREADS=str(torch.get_num_threads()))
    tool = osp.join(REPO, 'tools', 'deploy', 'export_onnx.py')
    run = subprocess.run([sys.executable, tool, digits_subnet, '--output',
                          str(tmp_path / 'cli.onnx')], capture_output=True, text=True,
                         env=env, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert 'onnxruntime == PyTorch within 0.0001' in run.stdout
    assert f"wrote {tmp_path / 'cli.onnx'}" in run.stdout

    bad = subprocess.run([sys.executable, tool, str(tmp_path)], capture_output=True, text=True,
                         env=env, timeout=600)
    assert bad.returncode != 0
    assert 'export_onnx.py: error:' in bad.stderr and 'not an exported subnet' in bad.stderr
    assert sorted(os.listdir(tmp_path)) == ['cli.onnx']
