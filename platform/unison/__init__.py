"""Unison: one feature definition and one optimized ONNX model, served on batch, online and streaming paths."""

__version__ = "0.1.0"
