# DMS search for a YOLOv8-n-sized detector: the supernet is YOLOv8 with deepen_factor 0.5 and
# widen_factor 0.5 (paper App. A.4.1; YOLOv8-n is 0.33 / 0.25), trained with mmyolo's YOLOv8-n
# recipe at 640x640 and searched for 30 epochs down to the MACs of the paper's DMS-YOLOv8-n.
# default_scope stays mmyolo (its datasets, transforms and hooks); the DMS wrapper is built in
# the mmrazor scope, the detector in mmyolo's.
# tools/dist_train.sh configs/dms/yolov8_n.py 8
_base_ = ['mmyolo::yolov8/yolov8_n_syncbn_fast_8xb16-500e_coco.py', './_base_/dms_search.py']

deepen_factor = 0.5
widen_factor = 0.5
architecture = _base_.model
architecture._scope_ = 'mmyolo'
architecture.backbone.deepen_factor = deepen_factor
architecture.backbone.widen_factor = widen_factor
architecture.neck.deepen_factor = deepen_factor
architecture.neck.widen_factor = widen_factor
architecture.bbox_head.head_module.widen_factor = widen_factor

# Widths from MMRazor's tracer (CSPLayerWithTwoConv's split included), depths from the
# backbone's identity-residual DarknetBottlenecks (the neck's have no shortcut: fixed).
mutator = dict(_base_.mutator, parse_cfg=dict(_base_.mutator.parse_cfg,
                                              demo_input=(1, 3, 640, 640)))
model = dict(_delete_=True, _scope_='mmrazor', type='DMS', architecture=architecture,
             mutator=mutator, resource_value='hard')

# Search (App. A.4.1, Table 16): 30 epochs, the last 3 searching width only; lambda_resource 1.
# mmyolo's YOLOv5OptimizerConstructor ignores custom_keys; DMSOptimWrapperConstructor runs it
# and adds the structure parameters as one more group (lr_structure, no weight decay).
search_epochs = 30
lr_structure = 5e-3
train_cfg = dict(max_epochs=search_epochs)
optim_wrapper = dict(
    constructor='DMSOptimWrapperConstructor',
    paramwise_cfg=dict(
        base_constructor='YOLOv5OptimizerConstructor',
        custom_keys={'dms_ratio': dict(lr_mult=lr_structure / _base_.optim_wrapper.optimizer.lr,
                                       decay_mult=0.0)}))
# mmyolo's hooks (EMA, the close-mosaic pipeline switch), then the DMS hooks
custom_hooks = _base_.custom_hooks + [
    dict(type='DMSImportanceHook'),
    dict(type='ResourceLossHook', resource='macs', target='4.2G', lambda_resource=1.0,
         width_only_epochs=3, match_target=True),
    # stop at a NaN / inf loss without checkpointing it; resume draws the same random numbers
    dict(type='DMSNaNGuardHook'),
    dict(type='RandomStateHook'),
]
