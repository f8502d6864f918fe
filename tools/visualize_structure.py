# Copyright (c) mmdms contributors. All rights reserved.
"""Draw a searched structure like the paper's Fig. 4.

``python tools/visualize_structure.py DIR/subnet.json [--out structure.png] [--title TEXT]``
"""
import argparse
import os.path as osp

from mmdms.structures import load_subnet
from mmdms.visualization import plot_structure


def main() -> None:
    parser = argparse.ArgumentParser(description='Draw the structure of an exported subnet')
    parser.add_argument('subnet', help='subnet.json written by tools/export_subnet.py')
    parser.add_argument('--out', help='the PNG to write (default: structure.png next to it)')
    parser.add_argument('--title', help='the figure title')
    args = parser.parse_args()
    out = args.out or osp.join(osp.dirname(osp.abspath(args.subnet)), 'structure.png')
    print(f'wrote {plot_structure(load_subnet(args.subnet), out, args.title)}')


if __name__ == '__main__':
    main()
