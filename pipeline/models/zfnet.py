"""ZFNet (Zeiler & Fergus 2013) and a small variant of it for the offline demo.

Layer names follow the paper (conv1..conv5, fc6..) so the atlas can be indexed by them.
ReLUs are not in-place: the deconvnet records and replays activations through hooks, and an
in-place ReLU would overwrite the tensor a hook saw.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from pipeline.models import register_model


def _lrn() -> nn.LocalResponseNorm:
    """Cross-channel contrast normalisation with AlexNet/ZFNet constants."""
    return nn.LocalResponseNorm(size=5, alpha=1e-4, beta=0.75, k=2.0)


class ZFNet(nn.Module):
    """``features`` (convolutions) -> ``avgpool`` -> flatten -> ``classifier`` (fully connected)."""

    def __init__(self, features: nn.Sequential, avgpool: nn.Module,
                 classifier: nn.Sequential) -> None:
        super().__init__()
        self.features = features
        self.avgpool = avgpool
        self.classifier = classifier
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d | nn.Linear):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                if m.bias is not None:  # (every layer here has one)
                    nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.avgpool(self.features(x))
        return self.classifier(torch.flatten(x, 1))


def _features(channels: tuple[int, int, int, int, int], conv1: tuple[int, int, int],
              conv2: tuple[int, int, int], pools: tuple[int, int, int]) -> nn.Sequential:
    """ZFNet's conv stack; ``conv*`` are (kernel, stride, padding), ``pools`` the pool paddings.

    All pools are 3x3 stride 2 (overlapping max pooling as in the paper).
    """
    c1, c2, c3, c4, c5 = channels
    return nn.Sequential(OrderedDict([
        ("conv1", nn.Conv2d(3, c1, conv1[0], stride=conv1[1], padding=conv1[2])),
        ("relu1", nn.ReLU()),
        ("pool1", nn.MaxPool2d(3, stride=2, padding=pools[0])),
        ("norm1", _lrn()),
        ("conv2", nn.Conv2d(c1, c2, conv2[0], stride=conv2[1], padding=conv2[2])),
        ("relu2", nn.ReLU()),
        ("pool2", nn.MaxPool2d(3, stride=2, padding=pools[1])),
        ("norm2", _lrn()),
        ("conv3", nn.Conv2d(c2, c3, 3, padding=1)),
        ("relu3", nn.ReLU()),
        ("conv4", nn.Conv2d(c3, c4, 3, padding=1)),
        ("relu4", nn.ReLU()),
        ("conv5", nn.Conv2d(c4, c5, 3, padding=1)),
        ("relu5", nn.ReLU()),
        ("pool5", nn.MaxPool2d(3, stride=2, padding=pools[2])),
    ]))


@register_model()
def zfnet_small(num_classes: int, image_size: int = 64) -> ZFNet:
    """ZFNet shape at 1/8 width for 64 px images: 16/32/48/48/32 = 176 conv units.

    Geometry at 64 px: conv1 7x7/2 p3 -> 32, pool1 3/2 p1 -> 16, conv2 5x5/1 p2 -> 16,
    pool2 3/2 p1 -> 8, conv3-5 3x3/1 p1 -> 8, pool5 3/2 p1 -> 4; receptive field of pool5 is
    99 px with a 16 px stride. Below 48 px conv1 uses stride 1 so pool5 keeps >= 4x4 cells.
    ``avgpool`` pools to 4x4 so the classifier size does not depend on ``image_size``.
    """
    if image_size < 16:
        raise ValueError(f"zfnet_small needs image_size >= 16, got {image_size}")
    stride1 = 2 if image_size >= 48 else 1
    features = _features((16, 32, 48, 48, 32), conv1=(7, stride1, 3), conv2=(5, 1, 2),
                         pools=(1, 1, 1))
    classifier = nn.Sequential(OrderedDict([
        ("drop6", nn.Dropout(0.5)),
        ("fc6", nn.Linear(32 * 4 * 4, 128)),
        ("relu6", nn.ReLU()),
        ("drop7", nn.Dropout(0.5)),
        ("fc7", nn.Linear(128, num_classes)),
    ]))
    return ZFNet(features, nn.AdaptiveAvgPool2d((4, 4)), classifier)


@register_model()
def zfnet(num_classes: int = 1000) -> ZFNet:
    """The paper's ZFNet for 224 px input (Zeiler & Fergus 2013, fig. 3).

    conv1 7x7/2 96 -> 110, pool1 -> 55, conv2 5x5/2 256 -> 26, pool2 -> 13, conv3-5 3x3
    384/384/256 -> 13, pool5 -> 6; fc6 and fc7 have 4096 units, fc8 is the output layer.
    There are no downloadable weights: load them from a checkpoint.
    """
    features = _features((96, 256, 384, 384, 256), conv1=(7, 2, 1), conv2=(5, 2, 0),
                         pools=(1, 1, 0))
    classifier = nn.Sequential(OrderedDict([
        ("drop6", nn.Dropout(0.5)),
        ("fc6", nn.Linear(256 * 6 * 6, 4096)),
        ("relu6", nn.ReLU()),
        ("drop7", nn.Dropout(0.5)),
        ("fc7", nn.Linear(4096, 4096)),
        ("relu7", nn.ReLU()),
        ("fc8", nn.Linear(4096, num_classes)),
    ]))
    return ZFNet(features, nn.AdaptiveAvgPool2d((6, 6)), classifier)
