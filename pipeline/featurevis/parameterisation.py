"""The image being optimised, as Lucid parameterises it: a decorrelated Fourier spectrum.

Optimising pixels directly finds high-frequency patterns that drive a unit but mean nothing
to a reader. Lucid's remedy (``lucid.optvis.param.spatial.fft_image`` and
``param.color.to_valid_rgb``) is to optimise in a space where the image's natural statistics
are whitened, so plain gradient steps are not dominated by the high frequencies:

- each channel is a 2-D real FFT spectrum, scaled by 1/f (``decay_power`` 1), so every spatial
  frequency has about equal energy to begin with;
- the three colour channels are mixed through the square root of ImageNet's colour
  correlation matrix (Lucid's ``color_correlation_svd_sqrt``), so colours are decorrelated too;
  inputs of one or four channels are not mixed (no such statistics for them);
- a sigmoid maps the result into the valid pixel range [0, 1].

The spectra of a whole batch live in one tensor ``[units, channels, H, W // 2 + 1, 2]``;
nothing mixes images of the batch, so each unit's image is optimised on its own.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

#: Lucid's square root of ImageNet's colour correlation matrix (divided below by its largest
#: column norm, as Lucid does): mixes the three decorrelated channels into RGB.
COLOR_CORRELATION_SVD_SQRT = np.asarray([[0.26, 0.09, 0.02],
                                         [0.27, 0.00, -0.05],
                                         [0.27, -0.09, 0.03]], dtype=np.float32)
INIT_SD = 0.01  # Lucid's standard deviation of the random initial spectrum
DECAY_POWER = 1.0  # the spectrum's 1/f**decay_power scale
IMAGE_SCALE = 4.0  # Lucid divides the inverse FFT by this ("magic constant")


def frequencies(height: int, width: int) -> np.ndarray:
    """The 2-D frequency magnitude of each cell of a real FFT of an ``height x width`` image."""
    fy = np.fft.fftfreq(height)[:, None]
    fx = np.fft.rfftfreq(width)[None, :]
    return np.sqrt(fx * fx + fy * fy)


class FourierImage:
    """``n`` images of ``channels x side x side``, parameterised as Lucid's ``fft_image``.

    ``spectrum`` is the tensor to optimise; :meth:`pixels` the images it stands for, in
    [0, 1]. Each image's initial spectrum is drawn by its own generator of ``generators`` (on
    the CPU, so a GPU run starts from the same images as a CPU run, and an image does not
    depend on which others share its batch)."""

    def __init__(self, generators: Sequence[torch.Generator], channels: int, side: int,
                 device: torch.device | str = "cpu") -> None:
        freqs = frequencies(side, side)
        scale = 1.0 / np.maximum(freqs, 1.0 / side) ** DECAY_POWER
        self.side, self.channels = side, channels
        self.scale = torch.from_numpy(scale.astype(np.float32))[None, None, :, :, None] \
            .to(device)
        init = torch.stack([torch.randn((channels, *freqs.shape, 2), generator=generator)
                            for generator in generators]) * INIT_SD
        self.spectrum = init.to(device).requires_grad_(True)
        mix = COLOR_CORRELATION_SVD_SQRT / np.max(np.linalg.norm(COLOR_CORRELATION_SVD_SQRT,
                                                                 axis=0))
        # as a 1x1 convolution: out[d] = sum_c mix[d, c] * in[c]
        self.mix = torch.from_numpy(mix.copy())[:, :, None, None].to(device) \
            if channels == 3 else None

    def pixels(self) -> torch.Tensor:
        """The images ``[n, channels, side, side]`` in [0, 1]."""
        spectrum = torch.view_as_complex(self.spectrum * self.scale)
        image = torch.fft.irfft2(spectrum, s=(self.side, self.side), norm="ortho") / IMAGE_SCALE
        if self.mix is not None:
            image = torch.nn.functional.conv2d(image, self.mix)
        return torch.sigmoid(image)
