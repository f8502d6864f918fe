from .digits import DigitsDataset, digits_split_indices  # noqa: F401
from .fashion_mnist import LocalFashionMNIST  # noqa: F401
from .text_blocks import BYTE_VOCAB_SIZE, TextBlockDataset, read_text  # noqa: F401
