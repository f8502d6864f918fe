# DMS search on an enlarged MobileNetV2 (paper App. A.4.1): 1.5x the channels and twice the
# blocks of every stage, trained with mmpretrain's MobileNetV2 recipe.
_base_ = ['mmpretrain::mobilenet_v2/mobilenet-v2_8xb32_in1k.py', './_base_/dms_search.py']

architecture = _base_.model
architecture.backbone = dict(type='ScalableMobileNetV2', widen_factor=1.5, deepen_factor=2.0)
architecture.head.in_channels = 1920  # 1280 x 1.5
model = dict(_delete_=True, _scope_='mmrazor', type='DMS', architecture=architecture,
             mutator=_base_.mutator, resource_value='hard')

# Search (App. A.4.1, Table 16): 30 epochs, the last 3 searching width only; lambda_resource 1;
# structure parameters in their own group (lr_structure, no weight decay).
search_epochs = 30
lr_structure = 5e-3
train_cfg = dict(max_epochs=search_epochs)
optim_wrapper = dict(paramwise_cfg=dict(custom_keys={
    'dms_ratio': dict(lr_mult=lr_structure / _base_.optim_wrapper.optimizer.lr, decay_mult=0.0)}))
custom_hooks = [
    dict(type='DMSImportanceHook'),
    dict(type='ResourceLossHook', resource='macs', target='0.3G', lambda_resource=1.0,
         width_only_epochs=3, match_target=True),
    # stop at a NaN / inf loss without checkpointing it; resume draws the same random numbers
    dict(type='DMSNaNGuardHook'),
    dict(type='RandomStateHook'),
]
