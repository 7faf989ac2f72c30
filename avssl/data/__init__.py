"""Decoding, audio features, sampling, transforms, datasets and corpus preparation."""
from typing import Any

from avssl.data.decoding import Clip, DecodeError, MediaReader, probe, read_audio, read_clip

__all__ = ["Clip", "DecodeError", "MediaReader", "probe", "read_audio", "read_clip", "VideoDataset",
           "TooManyDecodeErrors", "load_rows", "ManifestTable"]


def __getattr__(name: str) -> Any:
    # Datasets pull in transforms and audio features; import them only when asked for.
    if name in ("VideoDataset", "TooManyDecodeErrors", "load_rows"):
        from avssl.data import datasets

        return getattr(datasets, name)
    if name == "ManifestTable":
        from avssl.data.manifest_table import ManifestTable

        return ManifestTable
    raise AttributeError(f"module 'avssl.data' has no attribute {name!r}")
