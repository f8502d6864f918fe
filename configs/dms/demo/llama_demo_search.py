# DMS_p on the trained supernet of `make demo-llm` (tools/demo_llm.py): the attention heads
# (per key/value group) and FFN widths of every decoder layer of the small Llama of
# llama_demo_pretrain.py, searched with the LM loss + the parameter resource loss to 70% of its
# parameters (Eq. 10's decaying target over the first 70% of the iterations, then the widths
# matched to the target), from the weights in `model.architecture.pretrained_path` (a Hugging
# Face directory; the demo passes its cached supernet):
#   python tools/train.py configs/dms/demo/llama_demo_search.py --work-dir W \
#       --cfg-options model.architecture.pretrained_path=SUPERNET_HF_DIR
# Depth is not searched (the paper's Llama setting: heads and FFN widths). Tied widths (one
# width per kind shared by every layer, exported as a plain LlamaForCausalLM):
#   --cfg-options model.mutator.adapter_args.LlamaForCausalLMAdapter.tie_layer_widths=True
# The exported subnet's config.py (tools/export_subnet.py) is the recovery fine-tune: the demo
# runs it for `recovery_iters` (tools/demo_llm.py --recovery-iters).
_base_ = ['./llama_demo_pretrain.py']

supernet_dir = '{{$LLAMA_DEMO_SUPERNET:LLAMA_DEMO_SUPERNET_not_set}}'  # or --cfg-options
architecture = dict(_scope_='mmrazor', type='HFCausalLM', pretrained_path=supernet_dir)
model = dict(
    _delete_=True,
    _scope_='mmrazor',
    type='DMS',
    architecture=architecture,
    mutator=dict(
        type='DMSMutator',
        search_depth=False,
        channel_unit_cfg=dict(type='DMSChannelUnit', default_args=dict(importance='taylor')),
        parse_cfg=dict(type='ChannelAnalyzer', demo_input=(1, 128),  # (1, seq_len)
                       tracer_type='FxTracer')),
    resource_value='hard')

iters = 100
lr = 5e-4
lr_structure = 5e-3
custom_hooks = [
    dict(type='DMSImportanceHook'),
    dict(type='ResourceLossHook', resource='params', target_ratio=0.7, lambda_resource=1.0,
         width_only_iters=30, match_target=True, save_structure=False),
    dict(type='DMSNaNGuardHook'),
    dict(type='RandomStateHook'),
]
optim_wrapper = dict(
    optimizer=dict(lr=lr, weight_decay=0.0),
    paramwise_cfg=dict(custom_keys={
        'dms_ratio': dict(lr_mult=lr_structure / lr, decay_mult=0.0)}))
param_scheduler = [dict(type='ConstantLR', factor=1.0, by_epoch=False, begin=0, end=iters)]
train_cfg = dict(by_epoch=False, max_iters=iters, val_interval=iters)
default_hooks = dict(
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=iters, max_keep_ckpts=1,
                    save_last=True))
