# DMS search for a YOLOv8-n-sized detector: the supernet is YOLOv8 with deepen_factor 0.5 and
# widen_factor 0.5 (paper App. A.4.1; YOLOv8-n is 0.33 / 0.25), trained with mmyolo's YOLOv8-n
# recipe at 640x640. default_scope stays mmyolo (its datasets, transforms and hooks); the DMS
# wrapper is built in the mmrazor scope, the detector in mmyolo's.
# tools/dist_train.sh configs/dms/yolov8_n.py 8
#
# The pieces of ./_base_/dms_search.py are repeated here instead of inherited: both it and the
# mmyolo config set custom_hooks, and mmengine refuses a key defined by two bases. mmyolo's
# hooks (EMA, the close-mosaic pipeline switch) are kept and the importance hook is added.
_base_ = ['mmyolo::yolov8/yolov8_n_syncbn_fast_8xb16-500e_coco.py']
custom_imports = dict(imports=['mmdms'], allow_failed_imports=False)

deepen_factor = 0.5
widen_factor = 0.5
input_size = 640

architecture = _base_.model
architecture._scope_ = 'mmyolo'
architecture.backbone.deepen_factor = deepen_factor
architecture.backbone.widen_factor = widen_factor
architecture.neck.deepen_factor = deepen_factor
architecture.neck.widen_factor = widen_factor
architecture.bbox_head.head_module.widen_factor = widen_factor

# Widths from MMRazor's tracer (CSPLayerWithTwoConv's split included), depths from the
# backbone's identity-residual DarknetBottlenecks (the neck's have no shortcut: fixed).
mutator = dict(
    type='DMSMutator',
    channel_unit_cfg=dict(type='DMSChannelUnit', default_args=dict(importance='taylor')),
    parse_cfg=dict(type='ChannelAnalyzer', demo_input=(1, 3, input_size, input_size),
                   tracer_type='FxTracer'))
model = dict(_delete_=True, _scope_='mmrazor', type='DMS', architecture=architecture, mutator=mutator)

# Element importance is updated once per iteration, averaged over ranks.
custom_hooks = _base_.custom_hooks + [dict(type='DMSImportanceHook')]
