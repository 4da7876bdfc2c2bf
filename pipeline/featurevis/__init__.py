"""Feature visualization by optimization: for every unit, the input it wants.

The atlas's other half. Zeiler & Fergus show which images of the data drive a unit and what
in them (the deconv stage); this package finds an image that drives the unit *as much as it
can*, by gradient ascent on the input, as Lucid / Lucent / OpenAI Microscope do (Olah,
Mordvintsev & Schubert, "Feature Visualization", Distill 2017):

- :mod:`~pipeline.featurevis.parameterisation`: the image as a decorrelated Fourier spectrum
  with a 1/f scale and ImageNet's colour decorrelation, through a sigmoid into [0, 1];
- :mod:`~pipeline.featurevis.transforms`: a random jitter, scale and rotation of every image at
  every step (transformation robustness), so the result is not adversarial high-frequency noise;
- :mod:`~pipeline.featurevis.optimise`: many units at once (one image per unit, in one batch),
  the forward pass stopping at the unit's layer, Adam, two objectives (the unit's mean over
  its whole map; its centre position, on an input the size of its receptive field);
- :mod:`~pipeline.featurevis.store`: ``featurevis.zarr``, written a block of units at a time.
"""
