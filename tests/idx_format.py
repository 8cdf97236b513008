"""Writer for the real IDX gz format that torchvision's MNIST/FashionMNIST loaders read (tests only)."""

import gzip
import struct

import numpy as np


def write_idx_gz(path, arr: np.ndarray) -> None:
    """IDX as published by LeCun/Zalando: big-endian magic 0x00000803 (uint8, 3-D) or 0x00000801
    (1-D), then the sizes, then the bytes; gzip-compressed."""
    arr = np.ascontiguousarray(arr, dtype=np.uint8)
    magic = {3: 0x00000803, 1: 0x00000801}[arr.ndim]
    header = struct.pack(">I", magic) + b"".join(struct.pack(">I", s) for s in arr.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + arr.tobytes())
