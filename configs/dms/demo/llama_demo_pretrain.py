# The supernet of `make demo-llm` (tools/demo_llm.py), trained from scratch: a small Llama with
# grouped-query attention (bytes as tokens, hidden 128, 10 decoder layers, 8 query heads in 4
# key/value groups of head size 16, FFN 384; 2,034,304 parameters) on the prose of Debian's
# Python documentation (apt-get install python3-doc), 128-byte blocks, the last 1% held out.
#   python tools/train.py configs/dms/demo/llama_demo_pretrain.py --work-dir W
# tools/demo_llm.py runs it once per setting and caches the trained model as a Hugging Face
# directory (mmdms.apis.cached_pretraining); configs/dms/demo/llama_demo_search.py prunes it.
_base_ = ['mmpretrain::_base_/default_runtime.py']

custom_imports = dict(imports=['mmdms'], allow_failed_imports=False)

seq_len = 128
data_root = '{{$LLM_DATA:/usr/share/doc/python3.11/html/_sources}}'
llama_demo = dict(model_type='llama', vocab_size=256, hidden_size=128, intermediate_size=384,
                  num_hidden_layers=10, num_attention_heads=8, num_key_value_heads=4,
                  max_position_embeddings=seq_len, tie_word_embeddings=False)
model = dict(_scope_='mmrazor', type='HFCausalLM', config=llama_demo)

dataset = dict(type='TextBlockDataset', data_root=data_root, pattern='**/*.rst.txt',
               block_size=seq_len, tokenizer=None, val_fraction=0.01)
train_dataloader = dict(
    batch_size=16,
    num_workers=0,
    dataset=dict(dataset, split='train'),
    collate_fn=dict(type='default_collate'),
    sampler=dict(type='InfiniteSampler', shuffle=True))
val_dataloader = dict(
    batch_size=64,
    num_workers=0,
    dataset=dict(dataset, split='val'),
    collate_fn=dict(type='default_collate'),
    sampler=dict(type='DefaultSampler', shuffle=False))
val_evaluator = dict(type='Perplexity')
test_dataloader = val_dataloader
test_evaluator = val_evaluator

iters = 600
lr = 2e-3
# float32 on the CPU: no AMP
optim_wrapper = dict(type='OptimWrapper',
                     optimizer=dict(type='AdamW', lr=lr, betas=(0.9, 0.95), weight_decay=0.1),
                     clip_grad=dict(max_norm=1.0))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.05, by_epoch=False, begin=0, end=30),
    dict(type='CosineAnnealingLR', by_epoch=False, begin=30, end=iters, eta_min=lr / 10),
]
train_cfg = dict(by_epoch=False, max_iters=iters, val_interval=iters)
val_cfg = dict()
test_cfg = dict()
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=50),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=iters, max_keep_ckpts=1,
                    save_last=True))
log_processor = dict(by_epoch=False)
randomness = dict(seed=0, deterministic=False)
