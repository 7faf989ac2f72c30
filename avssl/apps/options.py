"""Option types for the command line: a bad value is a one-line usage error (exit 2), not a traceback later.

Each is an argparse ``type=``: it takes the text given and returns the value, or raises
``argparse.ArgumentTypeError`` with what the value must be.
"""
from __future__ import annotations

import argparse
import math
import os
from typing import Callable, Tuple

from avssl.errors import PathError
from avssl.utils import check_writable_dir


def int_at_least(low: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
        return value

    return parse


def float_in(low: float, high: float = float("inf"), low_open: bool = False, high_open: bool = False) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        inside = (value > low if low_open else value >= low) and (value < high if high_open else value <= high)
        if not inside or not math.isfinite(value):
            span = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
            raise argparse.ArgumentTypeError(f"must be in {span}, got {text}")
        return value

    return parse


POSITIVE_INT = int_at_least(1)
NON_NEGATIVE_INT = int_at_least(0)
POSITIVE_FLOAT = float_in(0.0, low_open=True)


def views(text: str) -> Tuple[int, int]:
    """``KxS``: K uniformly spaced clips × S spatial crops per video (S = 1 or 3), e.g. ``10x3``."""
    clips, sep, crops = text.lower().partition("x")
    if not sep or not clips.isdigit() or not crops.isdigit() or int(clips) < 1 or int(crops) not in (1, 3):
        raise argparse.ArgumentTypeError(f"expected CLIPSxCROPS with CLIPS >= 1 and CROPS 1 or 3 (e.g. 10x3), got {text!r}")
    return int(clips), int(crops)


def existing_file(text: str) -> str:
    """An input file that must exist (a checkpoint, an annotation CSV)."""
    if os.path.isdir(text):
        raise argparse.ArgumentTypeError(f"{text} is a folder, not a file")
    if not os.path.exists(text):
        raise argparse.ArgumentTypeError(f"{text}: no such file")
    return text


def weights_file(text: str) -> str:
    """A weights file that must exist, optionally as ``FORMAT:PATH`` (see :func:`avssl.models.load_weights`)."""
    from avssl.models.weights import WeightsError, split_weights_spec

    try:
        _, path = split_weights_spec(text)
    except WeightsError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    existing_file(path)
    return text


def existing_dir(text: str) -> str:
    """An input folder that must exist."""
    if not os.path.isdir(text):
        raise argparse.ArgumentTypeError(f"{text}: no such folder")
    return text


def output_file(path: str, what: str) -> str:
    """Check that ``path`` can be written as a file: not a folder, and its folder writable or creatable."""
    if os.path.isdir(path):
        raise PathError(f"{what} {path}: a folder, not a file; give a file path")
    check_writable_dir(os.path.dirname(os.path.abspath(path)), f"{what}'s folder")
    return path
