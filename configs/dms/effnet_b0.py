# DMS search for an EfficientNet-B0-sized model: the supernet is EfficientNet-B4 at 224x224
# (paper App. A.4.1: models under 0.5G MACs are pruned from B4 at input 224), trained with
# mmpretrain's EfficientNet-B0 recipe.
_base_ = ['mmpretrain::efficientnet/efficientnet-b0_8xb32_in1k.py', './_base_/dms_search.py']

architecture = _base_.model
architecture.backbone.arch = 'b4'
architecture.head.in_channels = 1792  # B4's last conv width
model = dict(_delete_=True, _scope_='mmrazor', type='DMS', architecture=architecture, mutator=_base_.mutator)
