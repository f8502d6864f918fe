# DMS search on the digits demo's CIFAR-style ResNet-18 (16x16 inputs): a search that runs in
# minutes on a CPU, for the demo pipeline and the end-to-end tests.
# The shared search pieces are repeated here instead of inheriting ../_base_/dms_search.py:
# mmengine refuses a key (custom_imports, input_size) defined by two bases.
_base_ = ['../../demo/digits_resnet.py']

mutator = dict(
    type='DMSMutator',
    channel_unit_cfg=dict(type='DMSChannelUnit', default_args=dict(importance='taylor')),
    parse_cfg=dict(type='ChannelAnalyzer', demo_input=(1, 3, 16, 16), tracer_type='FxTracer'))
# The digits model is a local config: name its scope (mmpretrain) for the mmrazor-scoped DMS.
model = dict(_delete_=True, _scope_='mmrazor', type='DMS',
             architecture=dict(_base_.model, _scope_='mmpretrain'), mutator=mutator)

custom_hooks = [dict(type='DMSImportanceHook')]
