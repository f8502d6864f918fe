# DMS_p on Llama-7B (paper Sec. 5.3, Table 7): prune the attention heads and FFN widths of a
# pretrained Llama-7B (6.74B parameters) to 5.47B parameters, as LLM-Pruner, then recover by
# fine-tuning the exported subnet. Nothing is downloaded: the checkpoint and the text are local.
#
#   LLAMA_PATH=/path/to/llama-7b-hf LLM_DATA=/path/to/text/files \
#       bash tools/dist_train.sh configs/dms/llama_7b.py 8
# or --cfg-options model.architecture.pretrained_path=DIR train_dataloader.dataset.data_root=...
# Export: tools/export_subnet.py, then tools/deploy/export_hf.py SUBNET_DIR (Hugging Face
# directory; --uniform, a plain LlamaForCausalLM, needs the same widths in every layer: search
# with --cfg-options model.mutator.adapter_args.LlamaForCausalLMAdapter.tie_layer_widths=True).
#
# Differences from the paper: it searches on Alpaca with the unpruned model distilling the
# pruned one; here the search reads plain text files (TextBlockDataset over LLM_DATA, default
# the prose of Debian's python3-doc) with the LM loss only (no distillation yet). Depth is not
# searched (the paper prunes heads and FFN widths only). KV heads are pruned with their query
# group (Llama-7B is MHA: single heads). The schedule is an assumption, not the paper's.
_base_ = ['mmpretrain::_base_/default_runtime.py']

custom_imports = dict(imports=['mmdms'], allow_failed_imports=False)

llama_path = '{{$LLAMA_PATH:LLAMA_PATH_not_set}}'  # or --cfg-options (see above)
data_root = '{{$LLM_DATA:/usr/share/doc/python3.11/html/_sources}}'
data_pattern = '**/*.rst.txt'
seq_len = 512

architecture = dict(
    _scope_='mmrazor',
    type='HFCausalLM',
    pretrained_path=llama_path,
    # float32 master weights, bfloat16 autocast (AmpOptimWrapper below): bfloat16 weights
    # would lose AdamW's small updates. ~108 GB per rank (weights, gradients, AdamW states)
    # without sharding: a 141 GB GPU per rank, or an FSDP strategy (not tried).
    from_pretrained_kwargs=dict(torch_dtype='float32'))
mutator = dict(
    type='DMSMutator',
    search_depth=False,
    channel_unit_cfg=dict(type='DMSChannelUnit', default_args=dict(importance='taylor')),
    parse_cfg=dict(type='ChannelAnalyzer', demo_input=(1, seq_len), tracer_type='FxTracer'))
model = dict(_scope_='mmrazor', type='DMS', architecture=architecture, mutator=mutator,
             resource_value='hard')

# 6.74B -> 5.47B parameters (Table 7), the target decaying by Eq. 10, then width search to it
search_iters = 2000
lr = 1e-5
lr_structure = 5e-3
custom_hooks = [
    dict(type='DMSImportanceHook'),
    dict(type='ResourceLossHook', resource='params', target='5.47G', lambda_resource=1.0,
         match_target=True),
    dict(type='DMSNaNGuardHook'),
    dict(type='RandomStateHook'),
]

dataset = dict(type='TextBlockDataset', data_root=data_root, pattern=data_pattern,
               block_size=seq_len, tokenizer=llama_path)
train_dataloader = dict(
    batch_size=4,
    num_workers=2,
    dataset=dict(dataset, split='train'),
    collate_fn=dict(type='default_collate'),
    sampler=dict(type='InfiniteSampler', shuffle=True))
val_dataloader = dict(
    batch_size=4,
    num_workers=2,
    dataset=dict(dataset, split='val'),
    collate_fn=dict(type='default_collate'),
    sampler=dict(type='DefaultSampler', shuffle=False))
val_evaluator = dict(type='Perplexity')
test_dataloader = val_dataloader
test_evaluator = val_evaluator

optim_wrapper = dict(
    type='AmpOptimWrapper', dtype='bfloat16',
    optimizer=dict(type='AdamW', lr=lr, betas=(0.9, 0.95), weight_decay=0.0),
    clip_grad=dict(max_norm=1.0),
    paramwise_cfg=dict(custom_keys={
        'dms_ratio': dict(lr_mult=lr_structure / lr, decay_mult=0.0)}))
param_scheduler = [dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=100)]
train_cfg = dict(by_epoch=False, max_iters=search_iters, val_interval=search_iters)
val_cfg = dict()
test_cfg = dict()

default_hooks = dict(
    logger=dict(type='LoggerHook', interval=10),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=500, max_keep_ckpts=1,
                    save_last=True))
log_processor = dict(by_epoch=False)
randomness = dict(seed=0, deterministic=False)
