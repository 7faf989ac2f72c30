"""avssl: self-supervised learning of video and audio representations."""
__version__ = "0.1.0"
