# DMS search for a DeiT-Tiny-sized model (paper App. A.4.1): the supernet is DeiT-Small deepened
# from 12 to 16 layers, trained with mmpretrain's DeiT-Small recipe.
_base_ = ['mmpretrain::deit/deit-small_4xb256_in1k.py', './_base_/dms_search.py']

architecture = _base_.model
architecture.backbone.arch = dict(
    embed_dims=384, num_layers=16, num_heads=6, feedforward_channels=384 * 4)
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
    dict(type='ResourceLossHook', resource='macs', target='1.3G', lambda_resource=1.0,
         width_only_epochs=3, match_target=True),
    # stop at a NaN / inf loss without checkpointing it; resume draws the same random numbers
    dict(type='DMSNaNGuardHook'),
    dict(type='RandomStateHook'),
]
