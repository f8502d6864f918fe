from .digits import DigitsDataset, digits_split_indices  # noqa: F401
