from .digits import DigitsDataset, digits_split_indices  # noqa: F401
from .fashion_mnist import LocalFashionMNIST  # noqa: F401
