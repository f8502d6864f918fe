# A CPU-sized DMS search of a language model: configs/dms/llama_7b.py's pipeline on a tiny
# random-init Llama (bytes as tokens, hidden 64, 4 layers, 4 heads / 2 KV heads, FFN 192;
# 230K parameters) over the prose of Debian's Python documentation (apt-get install
# python3-doc), to 70% of its parameters. A smoke run of the search, export and Hugging Face
# export on 2 cores in about a minute, not a result (see docs/llm.md):
#   python tools/train.py configs/dms/demo/tiny_llama_search.py --work-dir work_dirs/tiny_llama
#   python tools/export_subnet.py configs/dms/demo/tiny_llama_search.py \
#       work_dirs/tiny_llama/iter_40.pth --work-dir work_dirs/tiny_llama/subnet
#   python tools/deploy/export_hf.py work_dirs/tiny_llama/subnet
_base_ = ['../llama_7b.py']

seq_len = 64
lr = 1e-3
tiny_llama = dict(
    _scope_='mmrazor',
    type='HFCausalLM',
    config=dict(model_type='llama', vocab_size=256, hidden_size=64, intermediate_size=192,
                num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2))
model = dict(architecture=dict(_delete_=True, **tiny_llama),
             mutator=dict(parse_cfg=dict(demo_input=(1, seq_len))))
custom_hooks = [
    dict(type='DMSImportanceHook'),
    dict(type='ResourceLossHook', resource='params', target_ratio=0.7, lambda_resource=1.0,
         match_target=True),
    dict(type='DMSNaNGuardHook'),
    dict(type='RandomStateHook'),
]
dataset = dict(type='TextBlockDataset', data_root='/usr/share/doc/python3.11/html/_sources',
               pattern='**/*.rst.txt', block_size=seq_len, tokenizer=None, val_fraction=0.01)
train_dataloader = dict(num_workers=0, batch_size=8, dataset=dict(dataset, split='train'))
val_dataloader = dict(num_workers=0, batch_size=64, dataset=dict(dataset, split='val'))
test_dataloader = val_dataloader
# float32 on the CPU: no AMP
optim_wrapper = dict(_delete_=True, type='OptimWrapper',
                     optimizer=dict(type='AdamW', lr=lr, weight_decay=0.0),
                     clip_grad=dict(max_norm=1.0),
                     paramwise_cfg=dict(custom_keys={
                         'dms_ratio': dict(lr_mult=5e-3 / lr, decay_mult=0.0)}))
train_cfg = dict(by_epoch=False, max_iters=40, val_interval=40)
default_hooks = dict(logger=dict(interval=5))
