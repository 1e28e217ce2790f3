"""LieConv layers and networks (paper §4-5): generic over every generated group.

    from lieconv_runtime import load_group
    from lieconv_runtime.nn import LieResNet
    G = load_group("SE3", alpha=0.2, lift_samples=4)
    net = LieResNet(chin=15, group=G, k=256, num_layers=2, nbhd=25, fill=0.5)
    out = net(coords (bs, n, 3), values (bs, n, 15), mask (bs, n))   # (bs, 1)

Importing this package changes no process-wide state; a training process may opt in to the
allocator tuning of `lieconv_runtime.perf.tune_malloc()` (the `lieconv` CLI and the benchmarks do).
"""
from lieconv_runtime.nn.geometry import PairGeometry
from lieconv_runtime.nn.lieconv import KernelMLP, LieConv, frozen_radius, reset_rngs, subsample_cloud
from lieconv_runtime.nn.norm import MaskedBatchNorm, Swish, masked_mean, masked_sum
from lieconv_runtime.nn.resnet import BottleBlock, LieResNet
from lieconv_runtime.nn.sampling import farthest_point_sample, select_neighbours

__all__ = [
    "BottleBlock", "KernelMLP", "LieConv", "LieResNet", "MaskedBatchNorm", "PairGeometry", "Swish",
    "farthest_point_sample", "frozen_radius", "masked_mean", "masked_sum", "reset_rngs", "select_neighbours",
    "subsample_cloud",
]
