# Copyright (c) mmdms contributors. All rights reserved.
"""Plain text files as a causal language-model dataset: tokenised, concatenated and packed into
fixed-length blocks of token ids (the layout LLM pre-training and perplexity evaluation use).

Nothing is downloaded. The tokenizer is UTF-8 bytes (ids 0..255, for a small model trained from
scratch) or the tokenizer of a local Hugging Face model directory (for a pretrained model).
"""
import glob
import math
import os.path as osp
from html.parser import HTMLParser
from typing import Dict, List, Optional, Sequence, Union

import torch
from mmpretrain.registry import DATASETS
from torch.utils.data import Dataset

#: Vocabulary size of the byte-level tokenizer (``tokenizer=None``).
BYTE_VOCAB_SIZE = 256


class _HTMLText(HTMLParser):
    """The text of an HTML page, without its scripts and styles."""

    def __init__(self) -> None:
        super().__init__()
        self.parts: List[str] = []
        self._skip = 0

    def handle_starttag(self, tag, attrs) -> None:
        if tag in ('script', 'style'):
            self._skip += 1

    def handle_endtag(self, tag) -> None:
        if tag in ('script', 'style') and self._skip:
            self._skip -= 1

    def handle_data(self, data) -> None:
        if not self._skip:
            self.parts.append(data)


def read_text(path: str) -> str:
    """The text of a file: as it is, or the visible text of an ``.html`` / ``.htm`` page."""
    with open(path, encoding='utf-8', errors='replace') as f:
        text = f.read()
    if path.endswith(('.html', '.htm')):
        parser = _HTMLText()
        parser.feed(text)
        text = ''.join(parser.parts)
    return text


@DATASETS.register_module()
class TextBlockDataset(Dataset):
    """Blocks of ``block_size`` token ids cut from plain text files.

    The files matching ``pattern`` under ``data_root`` are read in sorted order, tokenised,
    joined (each followed by the tokenizer's end-of-sequence id, if it has one; with bytes, a
    newline) and cut into consecutive blocks of ``block_size`` tokens (the last partial block is
    dropped). The last ``val_fraction`` of the blocks (a contiguous tail, so no validation text
    sits inside a training block) is the ``'val'`` split, the others ``'train'``; ``'all'`` is
    every block. Each item is ``dict(inputs=LongTensor(block_size))``: with
    ``collate_fn=dict(type='default_collate')`` a batch is ``dict(inputs=(B, block_size))``,
    what :class:`~mmdms.models.language_models.HFCausalLM` reads.

    Args:
        data_root (str): the directory searched.
        pattern (str | Sequence[str]): glob pattern(s) relative to ``data_root`` (``**``
            recurses), e.g. ``'**/*.rst.txt'``.
        block_size (int): tokens per block.
        split (str): ``'train'``, ``'val'`` or ``'all'``.
        val_fraction (float): the fraction of blocks in ``'val'``.
        tokenizer (str, optional): a local Hugging Face model or tokenizer directory whose
            tokenizer is used; ``None``: UTF-8 bytes (vocabulary of :data:`BYTE_VOCAB_SIZE`).
        max_files (int, optional): read at most this many files (the first, in sorted order).
    """

    def __init__(self,
                 data_root: str,
                 pattern: Union[str, Sequence[str]] = '**/*.txt',
                 block_size: int = 256,
                 split: str = 'train',
                 val_fraction: float = 0.05,
                 tokenizer: Optional[str] = None,
                 max_files: Optional[int] = None) -> None:
        if split not in ('train', 'val', 'all'):
            raise ValueError(f"TextBlockDataset split must be 'train', 'val' or 'all', got "
                             f'{split!r}')
        if not 0 < val_fraction < 1:
            raise ValueError(f'TextBlockDataset val_fraction must be in (0, 1), got '
                             f'{val_fraction}')
        if block_size < 2:
            raise ValueError(f'TextBlockDataset block_size must be at least 2 (a token and the '
                             f'next one), got {block_size}')
        self.data_root, self.block_size, self.split = data_root, block_size, split
        patterns = [pattern] if isinstance(pattern, str) else list(pattern)
        files = sorted({f for p in patterns
                        for f in glob.glob(osp.join(data_root, p), recursive=True)
                        if osp.isfile(f)})[:max_files]
        if not files:
            raise FileNotFoundError(
                f"TextBlockDataset: no file matches {patterns} under '{data_root}'. Point "
                'data_root at a directory of text files (e.g. the prose of Debian\'s Python '
                'documentation: apt-get install python3-doc gives '
                '/usr/share/doc/python3.11/html/_sources/**/*.rst.txt)')
        self.files = files
        ids = self._token_ids(files, tokenizer)
        num_blocks = len(ids) // block_size
        num_val = max(1, math.ceil(num_blocks * val_fraction))
        if num_blocks - num_val < 1:
            raise ValueError(f'TextBlockDataset: {len(ids)} tokens make {num_blocks} block(s) '
                             f'of {block_size}, too few to split off {val_fraction:.0%} for '
                             'validation; add text or use a smaller block_size')
        blocks = ids[:num_blocks * block_size].view(num_blocks, block_size)
        self.num_tokens_read = len(ids)
        self.blocks = {'train': blocks[:-num_val], 'val': blocks[-num_val:],
                       'all': blocks}[split].clone()

    def _token_ids(self, files: List[str], tokenizer: Optional[str]) -> torch.Tensor:
        """The token ids of ``files`` joined, each followed by the end-of-sequence id."""
        if tokenizer is None:  # bytes: one buffer, no Python list of ints
            self.vocab_size = BYTE_VOCAB_SIZE
            data = b''.join(read_text(path).encode('utf-8') + b'\n' for path in files)
            return torch.frombuffer(bytearray(data), dtype=torch.uint8).long()
        encode, eos = self._tokenizer(tokenizer)
        ids: List[int] = []
        for path in files:
            ids.extend(encode(read_text(path)))
            ids.extend(eos)
        return torch.tensor(ids, dtype=torch.long)

    def _tokenizer(self, tokenizer: str):
        """``(encode, eos)`` of a local Hugging Face tokenizer: a function from text to ids,
        and the ids put after each file."""
        try:
            from transformers import AutoTokenizer
        except ImportError as e:
            raise ImportError('TextBlockDataset with a tokenizer directory needs transformers: '
                              'pip install -e .[llm]') from e
        if not osp.isdir(tokenizer):
            raise FileNotFoundError(f"TextBlockDataset: tokenizer '{tokenizer}' is not a local "
                                    'directory (nothing is downloaded; pass the model '
                                    'directory, or None for bytes)')
        tok = AutoTokenizer.from_pretrained(tokenizer)
        self.vocab_size = len(tok)
        eos = [tok.eos_token_id] if tok.eos_token_id is not None else []
        return (lambda text: tok(text, add_special_tokens=False)['input_ids']), eos

    @property
    def metainfo(self) -> Dict:
        """What the evaluator and checkpoints keep of the dataset."""
        return dict(vocab_size=self.vocab_size, block_size=self.block_size,
                    num_blocks=len(self.blocks))

    def __len__(self) -> int:
        return len(self.blocks)

    def __getitem__(self, index: int) -> Dict[str, torch.Tensor]:
        return dict(inputs=self.blocks[index])
