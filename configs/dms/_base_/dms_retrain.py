# Pieces every DMS retrain config shares. A family retrain config inherits its mmpretrain /
# mmyolo training config and this file, then builds the exported subnet:
#   model = dict(_delete_=True, _scope_='mmrazor', type='DMSSubnet',
#                architecture=<the search config's architecture>, subnet=subnet)
# Export the subnet of a search first (tools/export_subnet.py CONFIG CKPT --work-dir DIR) and
# point the config at it: --cfg-options model.subnet=DIR/subnet.json
# DMS_np retrains from a fresh initialisation (the default here); to start from the searched
# weights (DMS_p) add load_from=DIR/pruned.pth (exported without --reinit).
custom_imports = dict(imports=['mmdms'], allow_failed_imports=False)
