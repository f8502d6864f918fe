# Copyright (c) mmdms contributors. All rights reserved.
"""Export an exported subnet to ONNX and check it with onnxruntime.

``python tools/deploy/export_onnx.py SUBNET_DIR [--checkpoint CKPT] [--output FILE]
[--shape H W] [--opset 17] [--force]`` writes ``SUBNET_DIR/model.onnx`` (dynamic batch; input:
the preprocessed image batch; outputs: a classifier's logits, a detector's raw head outputs)
from the directory ``tools/export_subnet.py`` wrote (weights: ``--checkpoint``, default its
``pruned.pth``), after onnxruntime reproduced PyTorch's outputs at batch 1 and 3 within 1e-4.
The ONNX file runs in a plain ``onnxruntime.InferenceSession``, without mmdms.
"""
import argparse
import os.path as osp
import sys

sys.path.append(osp.dirname(osp.dirname(osp.abspath(__file__))))  # tools/, for polite_threads
from polite_threads import passive_omp_wait  # noqa: E402

passive_omp_wait()  # before torch loads

import mmdms  # noqa: E402,F401  (compat shims and registrations come before OpenMMLab imports)
from mmdms.deploy import DeployError, check_subnet_dir, export_onnx  # noqa: E402


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Export an exported DMS subnet to ONNX')
    parser.add_argument('subnet_dir', help='the directory tools/export_subnet.py wrote')
    parser.add_argument('--checkpoint',
                        help='weights of the subnet, e.g. from retraining SUBNET_DIR/config.py '
                        '(default: SUBNET_DIR/pruned.pth)')
    parser.add_argument('--output', help='the ONNX file (default: SUBNET_DIR/model.onnx)')
    parser.add_argument('--shape', type=int, nargs=2, metavar=('H', 'W'),
                        help="input height and width (default: subnet.json's input_shape)")
    parser.add_argument('--opset', type=int, default=17, help='ONNX opset version')
    parser.add_argument('--force', action='store_true', help='replace an existing ONNX file')
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    shape = None
    if args.shape:
        try:
            channels = check_subnet_dir(args.subnet_dir)['input_shape'][1]
        except DeployError as e:
            raise SystemExit(f'export_onnx.py: error: {e}')
        shape = [1, channels, *args.shape]
    try:
        result = export_onnx(args.subnet_dir, args.output, args.checkpoint, input_shape=shape,
                             opset_version=args.opset, force=args.force)
    except DeployError as e:
        raise SystemExit(f'export_onnx.py: error: {e}')
    checks = ', '.join(f'batch {b}: {d:.1e}' for b, d in result['max_rel_diff'].items())
    print(f"onnxruntime == PyTorch within {result['tolerance']:g} (max relative output "
          f'difference {checks})')
    print(f"input '{result['input_name']}' (N, {', '.join(map(str, result['input_shape'][1:]))})"
          f", N dynamic; outputs {', '.join(result['output_names'])}")
    print(f"wrote {result['path']}")


if __name__ == '__main__':
    main()
