"""edgefire: a tiny CIFAR-10 SqueezeNet, trained, pruned, int8-quantized, exported and verified."""

__version__ = "0.1.0"
