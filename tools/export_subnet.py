# Copyright (c) mmdms contributors. All rights reserved.
"""Export the subnet a DMS search found.

``python tools/export_subnet.py CONFIG CHECKPOINT --work-dir DIR [--reinit] [--force]
[--structure FILE]`` writes
``DIR/subnet.json`` (the structure, its MACs and params), ``DIR/pruned.pth`` (the static pruned
model) and ``DIR/config.py`` (``tools/train.py DIR/config.py`` retrains it,
``tools/test.py DIR/config.py DIR/pruned.pth`` tests it), and prints supernet vs subnet cost.
"""
import argparse
import os.path as osp
import sys

sys.path.append(osp.dirname(osp.abspath(__file__)))  # tools/ (also under runpy), for the helper
from polite_threads import passive_omp_wait  # noqa: E402

passive_omp_wait()  # before torch loads

import mmdms  # noqa: E402,F401  (compat shims and registrations come before any OpenMMLab import)
from mmdms.apis import CheckpointMismatchError, export_subnet  # noqa: E402
from mmdms.structures import SubnetError  # noqa: E402
from mmengine.config import DictAction  # noqa: E402


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Export the subnet of a DMS search')
    parser.add_argument('config', help='the search config')
    parser.add_argument('checkpoint', help='a checkpoint of the search model')
    parser.add_argument('--work-dir', required=True, help='the directory to write')
    parser.add_argument('--reinit', action='store_true',
                        help='initialise the subnet afresh (DMS_np retraining) instead of '
                        'keeping the searched weights')
    parser.add_argument('--force', action='store_true', help='replace an existing --work-dir')
    parser.add_argument('--structure',
                        help="export this structure (a JSON file: e.g. one budget's "
                        'evolution_<ratio>.json of an evolution search) instead of the '
                        "checkpoint's")
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction,
        help='override settings of the search config, key=value pairs')
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    try:
        result = export_subnet(args.config, args.checkpoint, args.work_dir, reinit=args.reinit,
                               force=args.force, cfg_options=args.cfg_options,
                               structure=args.structure)
    except (CheckpointMismatchError, FileExistsError, SubnetError) as e:
        raise SystemExit(f'export_subnet.py: error: {e}')
    print(result['table'])
    print(f"static subnet == hard-masked search model (max relative output difference "
          f"{result['max_rel_output_diff']:.1e})")
    for path in result['files'].values():
        print(f'wrote {path}')


if __name__ == '__main__':
    main()
