# DMS search for a DeiT-Tiny-sized model (paper App. A.4.1): the supernet is DeiT-Small deepened
# from 12 to 16 layers, trained with mmpretrain's DeiT-Small recipe.
_base_ = ['mmpretrain::deit/deit-small_4xb256_in1k.py', './_base_/dms_search.py']

architecture = _base_.model
architecture.backbone.arch = dict(
    embed_dims=384, num_layers=16, num_heads=6, feedforward_channels=384 * 4)
model = dict(_delete_=True, _scope_='mmrazor', type='DMS', architecture=architecture, mutator=_base_.mutator)
