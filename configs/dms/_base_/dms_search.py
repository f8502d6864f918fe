# Pieces every DMS search config shares. A family config inherits its mmpretrain / mmyolo
# training config and this file, then wraps the architecture and adds the DMS hooks:
#   model = dict(_delete_=True, _scope_='mmrazor', type='DMS', architecture=..., mutator=mutator)
#   custom_hooks = [dict(type='DMSImportanceHook'), dict(type='ResourceLossHook', ...)]
# (custom_hooks is not set here: mmengine refuses a key that two bases define, and mmyolo's
# configs define their own hooks.)
custom_imports = dict(imports=['mmdms'], allow_failed_imports=False)

# Widths from MMRazor's tracer (traced at input_size), depths from identity-residual stages.
input_size = 224
mutator = dict(
    type='DMSMutator',
    channel_unit_cfg=dict(type='DMSChannelUnit', default_args=dict(importance='taylor')),
    parse_cfg=dict(type='ChannelAnalyzer', demo_input=(1, 3, input_size, input_size),
                   tracer_type='FxTracer'))
