# Copyright (c) mmdms contributors. All rights reserved.
"""mmdet's two-stage detectors (Faster R-CNN, Mask R-CNN, Cascade R-CNN ...): a network forward
that does not depend on the data.

mmdet's tensor mode runs the RPN, turns its maps into proposals (sigmoid, top-k, NMS: a number
of boxes that depends on the image and on the weights) and runs the RoI head on them. Counted
from one forward, the RoI head's MACs would be those of the supernet's proposals, not of the
static subnet's (another NMS, another count), and MMRazor's tracer cannot follow the NMS (its
wrapper of ``predict_by_feat`` failed with ``'list' object has no attribute 'node'``).

The network forward here is mmdet 2's ``forward_dummy``, the forward its FLOPs tool counted:
backbone, neck, the RPN head's maps, and the RoI head (``roi_head.forward``, mmdet's own code)
on a fixed set of ``max_per_img`` proposals per image (the RPN's test config: the most the RoI
head sees at test time; 1000 for Faster R-CNN), boxes spread over the image and its sizes by a
fixed rule. Same layers as mmdet's tensor mode, no NMS: the tracer, the estimator and the
export's checks all see the same work, and each RPN and RoI head layer is in the channel graph.
"""
from typing import Any, List, Sequence, Tuple

import torch
import torch.nn as nn

from mmdms.registry import ADAPTERS
from mmdms.utils.data_samples import tensor_mode_data_samples
from .base import FamilyAdapter

#: Proposals per image when the detector's test config does not say (mmdet's default).
DEFAULT_PROPOSALS = 1000


def num_proposals(detector: nn.Module) -> int:
    """The RPN's ``max_per_img`` at test time (``test_cfg.rpn``), else
    :data:`DEFAULT_PROPOSALS`."""
    test_cfg = getattr(detector, 'test_cfg', None) or {}
    rpn_cfg = test_cfg.get('rpn', None) if hasattr(test_cfg, 'get') else None
    value = rpn_cfg.get('max_per_img', None) if rpn_cfg is not None else None
    return int(value) if value else DEFAULT_PROPOSALS


def fixed_proposals(img_shape: Sequence[int], count: int, device=None,
                    dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``count`` boxes ``(x1, y1, x2, y2)`` inside an image of ``img_shape`` ``(H, W)``: sides
    from 4% to 96% of the shorter image side and centres spread over the image by
    low-discrepancy sequences, so that every FPN level the RoI extractor maps boxes to by size
    gets some. A fixed rule: the same boxes for the same shape."""
    height, width = float(img_shape[0]), float(img_shape[1])
    index = torch.arange(count, dtype=torch.float64)
    side = min(height, width) * (0.04 + 0.92 * ((index * 0.6180339887) % 1.0))
    cx = side / 2 + (width - side) * ((index * 0.7548776662) % 1.0)
    cy = side / 2 + (height - side) * ((index * 0.5698402910) % 1.0)
    boxes = torch.stack([cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2], dim=1)
    return boxes.to(device=device, dtype=dtype)


def two_stage_network_forward(detector: nn.Module, inputs: torch.Tensor,
                              data_samples: List) -> Tuple[Any, ...]:
    """Backbone, neck, the RPN head's maps and the RoI head on :func:`fixed_proposals`:
    ``(rpn_cls_scores, rpn_bbox_preds, *roi_head_outputs)``."""
    from mmengine.structures import InstanceData
    x = detector.extract_feat(inputs)
    rpn_outs = tuple(detector.rpn_head(x)) if detector.with_rpn else ()
    param = next(detector.parameters())
    count = num_proposals(detector)
    proposals = [InstanceData(bboxes=fixed_proposals(sample.metainfo['img_shape'], count,
                                                      param.device, param.dtype))
                 for sample in data_samples]
    roi_outs = detector.roi_head.forward(x, proposals, data_samples)
    return rpn_outs + tuple(roi_outs)


@ADAPTERS.register_module()
class TwoStageDetectorAdapter(FamilyAdapter):
    """mmdet's ``TwoStageDetector`` and its subclasses: :func:`two_stage_network_forward` is
    their network forward (counted, checked) and their traced forward."""

    module_type = 'mmdet.models.detectors.TwoStageDetector'

    def tensor_forward(self, module: nn.Module, inputs, data_samples):
        return two_stage_network_forward(module, inputs, data_samples)

    def trace_forward(self, module: nn.Module, inputs, data_samples=None, mode: str = 'tensor'):
        """The network forward in every mode (the tracer's, and MMRazor's pruning check, which
        only compares output shapes)."""
        if data_samples is None:
            data_samples = tensor_mode_data_samples(module, inputs)
        return two_stage_network_forward(module, inputs, data_samples)
