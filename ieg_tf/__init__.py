"""ieg_tf: IEG (Distilling Effective Supervision from Severe Label Noise, CVPR 2020) in TensorFlow 2 / Keras 3."""

__version__ = "0.1.0"
