# Copyright (c) mmdms contributors. All rights reserved.
"""Export a pruned Llama subnet as a Hugging Face model directory.

``python tools/deploy/export_hf.py SUBNET_DIR [--output DIR] [--checkpoint CKPT] [--uniform]
[--force]`` reads the directory ``tools/export_subnet.py`` wrote (weights: ``--checkpoint``,
default its ``pruned.pth``, e.g. a recovery fine-tune's checkpoint instead) and writes
``DIR`` (default ``SUBNET_DIR/hf``, ``SUBNET_DIR/hf_uniform`` with ``--uniform``):

* by default, per-layer widths: loads with
  ``AutoModelForCausalLM.from_pretrained(DIR, trust_remote_code=True)`` (the configuration and
  modeling files are saved beside the weights);
* ``--uniform``: a plain ``LlamaForCausalLM`` that loads without remote code; refused, with the
  widths found, when the kept layers' widths differ.

The directory is loaded back before it appears: its logits must equal the subnet's (1e-4
relative) and its parameter count ``subnet.json``'s. Save the tokenizer beside it yourself
(``AutoTokenizer.from_pretrained(LLAMA_DIR).save_pretrained(DIR)``): the subnet does not
change it.
"""
import argparse
import os.path as osp
import sys

sys.path.append(osp.dirname(osp.dirname(osp.abspath(__file__))))  # tools/, for polite_threads
from polite_threads import passive_omp_wait  # noqa: E402

passive_omp_wait()  # before torch loads

import mmdms  # noqa: E402,F401  (compat shims and registrations come before OpenMMLab imports)
from mmdms.deploy import DeployError  # noqa: E402
from mmdms.deploy.hf import export_hf  # noqa: E402


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Export a pruned Llama subnet as a Hugging Face directory')
    parser.add_argument('subnet_dir', help='the directory tools/export_subnet.py wrote')
    parser.add_argument('--output', help='the directory to write (default: SUBNET_DIR/hf, or '
                        'SUBNET_DIR/hf_uniform with --uniform)')
    parser.add_argument('--checkpoint',
                        help='weights of the subnet, e.g. from fine-tuning SUBNET_DIR/config.py '
                        '(default: SUBNET_DIR/pruned.pth)')
    parser.add_argument('--uniform', action='store_true',
                        help='a plain LlamaForCausalLM (no remote code); every kept layer must '
                        'have the same widths')
    parser.add_argument('--force', action='store_true', help='replace an existing output')
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    try:
        result = export_hf(args.subnet_dir, args.output, args.checkpoint, uniform=args.uniform,
                           force=args.force)
    except (DeployError, FileExistsError) as e:
        raise SystemExit(f'export_hf.py: error: {e}')
    how = 'trust_remote_code=True' if result['trust_remote_code'] else 'no remote code'
    print(f"reloaded == subnet (max relative logit difference {result['max_rel_diff']:.1e}), "
          f"{result['params']} parameters as subnet.json says")
    print(f"wrote {result['path']} ({result['config']}; AutoModelForCausalLM.from_pretrained "
          f'with {how})')


if __name__ == '__main__':
    main()
