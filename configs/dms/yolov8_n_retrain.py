# Retrain the subnet found by configs/dms/yolov8_n.py (pruned from YOLOv8 with deepen_factor 0.5,
# widen_factor 0.5) with mmyolo's YOLOv8-n recipe (paper App. A.4.1), its EMA and close-mosaic
# hooks included. default_scope stays mmyolo; DMSSubnet is built in mmrazor's scope.
#   python tools/export_subnet.py configs/dms/yolov8_n.py SEARCH_CKPT --work-dir work_dirs/yolov8_n_subnet --reinit
#   tools/dist_train.sh configs/dms/yolov8_n_retrain.py 8 --cfg-options model.subnet=work_dirs/yolov8_n_subnet/subnet.json
_base_ = ['mmyolo::yolov8/yolov8_n_syncbn_fast_8xb16-500e_coco.py', './_base_/dms_retrain.py']

# The architecture is the search config's supernet (DMSSubnet names any layer that differs).
deepen_factor = 0.5
widen_factor = 0.5
architecture = _base_.model
architecture._scope_ = 'mmyolo'
architecture.backbone.deepen_factor = deepen_factor
architecture.backbone.widen_factor = widen_factor
architecture.neck.deepen_factor = deepen_factor
architecture.neck.widen_factor = widen_factor
architecture.bbox_head.head_module.widen_factor = widen_factor
model = dict(_delete_=True, _scope_='mmrazor', type='DMSSubnet', architecture=architecture,
             subnet='work_dirs/yolov8_n_subnet/subnet.json')
