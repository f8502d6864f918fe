# The DMS search schedule of configs/dms/fmnist/*_search.py: the target decays (Eq. 10) to
# target_ratio of the supernet's MACs over the first epochs, the last one searches width only
# with a two-sided loss (match_target) so that the subnet lands on the target; single-element
# moves of the widths finish the landing within 1% (land_within: on these small supernets one
# channel can be several percent of the budget, and a search once ended 2.55% under it).
search_epochs = 4
width_only_epochs = 1
lambda_resource = 1.0
lr_structure = 5e-3
custom_hooks = [
    dict(type='DMSImportanceHook'),
    dict(type='ResourceLossHook', resource='macs', target_ratio=0.5,
         lambda_resource=lambda_resource, width_only_epochs=width_only_epochs,
         match_target=True, land_within=0.01),
    dict(type='DMSNaNGuardHook'),
    dict(type='RandomStateHook'),
]
# Warm-up, then a constant learning rate, so the structure can still move in the last epoch.
# (named search_*: the search configs assign them over the recipe's schedule)
search_param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=True, begin=0, end=1,
         convert_to_iter_based=True),
]
search_train_cfg = dict(by_epoch=True, max_epochs=search_epochs, val_interval=search_epochs)
