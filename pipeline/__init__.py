"""Deconv Atlas: a staged pipeline that renders a Zeiler & Fergus deconvnet atlas of a CNN."""

__version__ = "0.13.3"
