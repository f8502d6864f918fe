# Copyright (c) mmdms contributors. All rights reserved.
"""TextBlockDataset: text files tokenised (bytes, or a local Hugging Face tokenizer) and packed
into blocks, split into a training head and a validation tail."""
import pytest
import torch

from mmdms.datasets import TextBlockDataset, read_text


@pytest.fixture
def corpus(tmp_path):
    (tmp_path / 'b').mkdir()
    (tmp_path / 'a.txt').write_text('The quick brown fox.')
    (tmp_path / 'b' / 'c.txt').write_text('Jumps over the lazy dog!')
    (tmp_path / 'page.html').write_text(
        '<html><head><style>p {color: red}</style><script>var x = 1;</script></head>'
        '<body><p>Hello <b>world</b></p></body></html>')
    return tmp_path


def test_bytes_are_packed_in_file_order(corpus):
    data = TextBlockDataset(str(corpus), '**/*.txt', block_size=8, split='all')
    text = b'The quick brown fox.\nJumps over the lazy dog!\n'  # a.txt, b/c.txt, newlines
    assert data.num_tokens_read == len(text) and data.vocab_size == 256
    assert len(data) == len(text) // 8
    blocks = torch.stack([data[i]['inputs'] for i in range(len(data))])
    assert blocks.dtype == torch.long and blocks.shape == (len(text) // 8, 8)
    assert bytes(blocks.flatten().tolist()) == text[:len(data) * 8]


def test_validation_is_the_tail(corpus):
    kwargs = dict(data_root=str(corpus), pattern='**/*.txt', block_size=4, val_fraction=0.25)
    every = TextBlockDataset(split='all', **kwargs)
    train = TextBlockDataset(split='train', **kwargs)
    val = TextBlockDataset(split='val', **kwargs)
    assert len(val) == 3 and len(train) + len(val) == len(every) == 11
    assert torch.equal(torch.cat([train.blocks, val.blocks]), every.blocks)
    assert val.metainfo == dict(vocab_size=256, block_size=4, num_blocks=3)


def test_html_gives_its_visible_text(corpus):
    assert read_text(str(corpus / 'page.html')) == 'Hello world'


def test_local_hugging_face_tokenizer(corpus, tmp_path):
    tokenizers = pytest.importorskip('tokenizers')
    transformers = pytest.importorskip('transformers')
    words = 'the quick brown fox jumps over lazy dog'.split()
    vocab = {w: i for i, w in enumerate(['[UNK]', '</s>'] + words)}
    model = tokenizers.models.WordLevel(vocab, unk_token='[UNK]')
    tok = tokenizers.Tokenizer(model)
    tok.normalizer = tokenizers.normalizers.Lowercase()
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token='[UNK]',
                                                eos_token='</s>')
    fast.save_pretrained(str(tmp_path / 'tok'))

    data = TextBlockDataset(str(corpus), '**/*.txt', block_size=2, split='all',
                            tokenizer=str(tmp_path / 'tok'))
    # 'the quick brown fox .' </s> 'jumps over the lazy dog !' </s>
    expected = [2, 3, 4, 5, 0, 1, 6, 7, 2, 8, 9, 0, 1]
    assert data.vocab_size == len(vocab) and data.num_tokens_read == len(expected)
    assert data.blocks.flatten().tolist() == expected[:12]


def test_bad_input_is_one_clear_error(corpus):
    with pytest.raises(FileNotFoundError, match=r"no file matches \['\*\*/\*.md'\].*python3-doc"):
        TextBlockDataset(str(corpus), '**/*.md')
    with pytest.raises(ValueError, match='too few to split off'):
        TextBlockDataset(str(corpus), 'a.txt', block_size=16)
    with pytest.raises(FileNotFoundError, match='not a local directory'):
        TextBlockDataset(str(corpus), tokenizer=str(corpus / 'no_such_model'))
    with pytest.raises(ValueError, match="split must be 'train', 'val' or 'all'"):
        TextBlockDataset(str(corpus), split='test')
