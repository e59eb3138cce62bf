"""The input contract: what every model of a build takes, defined once and recorded in
`train.json`, so that training, calibration, the runtimes, the TFLite metadata, the report
and `predict` all prepare an image the same way.

An image of any size is decoded to RGB pixels 0-255, resized to size x size the way
MediaPipe Tasks' `ImageClassifier` does on the CPU (the whole image stretched to the square,
bilinear, no antialiasing, edges replicated: OpenCV's warp with INTER_LINEAR in its
ImageToTensorCalculator), and the model input is (pixel - mean) / std per channel.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DEFAULT_SIZE = 32  # CIFAR-10's own size, the reference's input
RESIZE = "stretch whole image, bilinear without antialiasing (MediaPipe ImageClassifier)"


@dataclass(frozen=True)
class InputContract:
    size: int = DEFAULT_SIZE
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (255.0, 255.0, 255.0)  # model input in [0, 1]
    color: str = "RGB"
    layout: str = "NHWC"
    resize: str = RESIZE

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.size, self.size, 3)

    def normalize(self, pixels: np.ndarray) -> np.ndarray:
        """Float model input from uint8 pixels (NumPy)."""
        mean, std = np.float32(self.mean), np.float32(self.std)
        return (pixels.astype(np.float32) - mean) / std

    def normalize_tf(self, images):
        """Float model input from uint8 pixels, in a TensorFlow graph."""
        from edgefire.tfenv import tensorflow

        tf = tensorflow()
        return (tf.cast(images, tf.float32) - self.mean) / self.std

    def to_json(self) -> dict:
        """The report's and train.json's `input` object (schema 1 keys, plus `resize`)."""
        return {"layout": self.layout, "color": self.color, "size": [self.size, self.size],
                "normalize": {"mean": list(self.mean), "std": list(self.std)},
                "resize": self.resize}

    @classmethod
    def from_json(cls, record: dict | None) -> InputContract:
        """The contract a build recorded; builds from before the contract took 32x32 pixel/255."""
        if not record:
            return cls()
        return cls(size=int(record["size"][0]), mean=tuple(record["normalize"]["mean"]),
                   std=tuple(record["normalize"]["std"]))


def resize(pixels: np.ndarray, size: int) -> np.ndarray:
    """An HxWx3 uint8 image stretched to size x size as MediaPipe samples it.

    Output pixel (x, y) reads the source at (x * W / size, y * H / size), bilinear between
    the four neighbours, the last row and column repeated at the edge.
    """
    height, width = pixels.shape[:2]
    if (height, width) == (size, size):
        return pixels
    rows, row_frac = _sample_points(height, size)
    cols, col_frac = _sample_points(width, size)
    row_frac, col_frac = row_frac[:, None, None], col_frac[None, :, None]
    image = pixels.astype(np.float32)
    top = image[rows[0]][:, cols[0]] * (1 - col_frac) + image[rows[0]][:, cols[1]] * col_frac
    bottom = image[rows[1]][:, cols[0]] * (1 - col_frac) + image[rows[1]][:, cols[1]] * col_frac
    out = top * (1 - row_frac) + bottom * row_frac
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _sample_points(length: int, size: int):
    """Source indices (left, right) and the weight of the right one, per output position."""
    position = np.arange(size, dtype=np.float64) * length / size
    left = np.floor(position).astype(np.int64)
    frac = (position - left).astype(np.float32)
    return (left, np.minimum(left + 1, length - 1)), frac
