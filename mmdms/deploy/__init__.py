# Copyright (c) mmdms contributors. All rights reserved.
"""Deployment of exported subnets (ONNX). ``onnx`` and ``onnxruntime`` are imported only when
an export runs: the ``# deploy`` section of ``requirements/optional.txt``."""
from .onnx import (ONNX_TOLERANCE, SUBNET_FILES, DeployError, NetworkOutputs, check_subnet_dir,
                   compare_with_onnxruntime, export_onnx, foreign_ops, load_subnet_model,
                   require_onnx, trace_to_onnx)

__all__ = ['DeployError', 'NetworkOutputs', 'ONNX_TOLERANCE', 'SUBNET_FILES', 'check_subnet_dir',
           'compare_with_onnxruntime', 'export_onnx', 'foreign_ops', 'load_subnet_model',
           'require_onnx', 'trace_to_onnx']
