"""The one place where the network's input channels become something to look at.

The run's stores keep pictures (patches, thumbnails, projections, filters) in the model's own
channels, the last axis of a ``[..., h, w, C]`` array: 1 (grey), 3 (RGB) or 4 (RGB and a fourth
channel, alpha for images read as RGBA). A screen shows RGB, so every picture of the atlas
passes through :func:`shown_rgb`:

- 1 channel: grey, the value in R, G and B alike (mid-grey stays 128: zero of a projection);
- 3 channels: as they are (byte for byte);
- 4 channels: channels 1-3 as colour, and beside them, ``FOURTH_GAP`` px to the right, the
  fourth channel as grey, so nothing the network read is left out. Pictures
  that something is drawn over at the image's own geometry (thumbnails with their receptive
  field box, the occlusion panels, small previews) take ``fourth_beside=False``: channels 1-3
  only; the index page says so (:func:`channels_note`).

Only numpy: display values are computed elsewhere (:func:`pipeline.interp.display.to_display`
for projections, :func:`pipeline.atlas.tiles.normalise_filters` for filters), per channel as
for colour.
"""

from __future__ import annotations

import numpy as np

FOURTH_GAP = 2  # px between channels 1-3 and channel 4, as between the cells of a tile
GAP_COLOUR = (40, 40, 40)  # the tiles' background (tiles.BACKGROUND): no value of a picture


def shown_rgb(pixels: np.ndarray, fourth_beside: bool = True) -> np.ndarray:
    """uint8 ``[..., h, w, C]`` (C = 1, 3 or 4) as uint8 RGB ``[..., h, w', 3]``: w' = w, or
    ``2 * w + FOURTH_GAP`` for 4 channels shown with the fourth beside (see the module doc)."""
    pixels = np.asarray(pixels)
    channels = pixels.shape[-1]
    if channels == 3:
        return pixels
    if channels == 1:
        return np.repeat(pixels, 3, axis=-1)
    if channels != 4:
        raise ValueError(f"pictures of 1, 3 or 4 channels can be shown, not {channels}")
    colour = pixels[..., :3]
    if not fourth_beside:
        return colour
    *outer, height, width, _ = pixels.shape
    out = np.empty((*outer, height, shown_width(width, channels), 3), pixels.dtype)
    out[..., :width, :] = colour
    out[..., width:width + FOURTH_GAP, :] = GAP_COLOUR
    out[..., width + FOURTH_GAP:, :] = pixels[..., 3:]
    return out


def shown_width(width: int, channels: int) -> int:
    """Width of :func:`shown_rgb` of a ``width``-pixel picture of ``channels`` channels."""
    return 2 * width + FOURTH_GAP if channels == 4 else width


def channels_note(channels: int) -> str:
    """One line for the model card on how the input channels are drawn ("" for RGB)."""
    if channels == 1:
        return "grey (1 channel)"
    if channels == 4:
        return ("4 channels: pictures and filters show channels 1-3 in colour and channel 4 "
                "in grey to their right; thumbnails, occlusion panels and previews show "
                "channels 1-3 only")
    return "" if channels == 3 else f"{channels} channels"
