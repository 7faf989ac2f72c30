"""Reading checkpoints safely, and choosing the checkpoint a run resumes from.

Every checkpoint avssl reads — a run's ``last.ckpt`` on resume, ``--checkpoint`` of ``eval`` / ``finetune`` /
``extract`` / ``cma-figure``, ``method.init_checkpoint``, ``method.init_from``, ``method.audio_checkpoint`` — goes
through :func:`load_checkpoint`, which unpickles with ``weights_only=True``: tensors and plain values only.
A pickle can name any function to call while it loads, so a file from a stranger that needs code to load is
refused with a one-line :class:`CheckpointError` rather than run.

A run keeps two checkpoints, ``last.ckpt`` and the one before it (``last.prev.ckpt``), so a latest checkpoint
that cannot be read (a truncated copy, a full disk) still leaves the previous one to resume from
(:func:`resume_checkpoint`).
"""
from __future__ import annotations

import logging
import os
import re
import zipfile
from typing import Any, Dict, Iterable, List, Optional

import torch

from avssl.errors import UserError

log = logging.getLogger(__name__)

#: The latest checkpoint of a run and the one before it, in ``OUTPUT_DIR/checkpoints``.
LAST = "last.ckpt"
PREVIOUS = "last.prev.ckpt"

#: Globals (besides torch's own allow-list) that avssl's checkpoints may contain. Lightning checkpoints of
#: avssl methods hold only tensors, numbers, strings, lists and dicts today; a type added to a checkpoint
#: later (or needed by a published weight format) is registered here, for the duration of a load only.
SAFE_GLOBALS: tuple = ()

_ZIP_MAGIC = b"PK\x03\x04"
# torch's legacy (pre-1.6) format starts with a pickled magic number: PROTO 2, LONG1 of 10 bytes.
_LEGACY_MAGIC = b"\x80\x02\x8a\x0a"


class CheckpointError(UserError, ValueError):
    """A checkpoint is missing, unreadable, truncated, not a checkpoint, or needs code to load."""


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """The checkpoint file does not exist."""


def load_checkpoint(path: Any, map_location: Any = "cpu", safe_globals: Iterable[Any] = (),
                    what: Optional[str] = None) -> Dict[str, Any]:
    """The dict saved in the checkpoint file ``path``, read with ``torch.load(weights_only=True)``.

    ``safe_globals`` are allowed besides :data:`SAFE_GLOBALS` (e.g. a published format's own class), for this
    load only. Raises :class:`CheckpointError` with one line naming the file and the reason: missing, a folder,
    unreadable, empty, truncated or corrupt, not a PyTorch checkpoint, or a pickle that needs code to load
    (``disallowed global module.name``); ``what`` (e.g. ``"method.init_from"``) starts that line.
    """
    try:
        return _load(os.fspath(path), map_location, safe_globals)
    except CheckpointError as e:
        if what:
            raise type(e)(f"{what}: {e}") from None
        raise


def _load(path: str, map_location: Any, safe_globals: Iterable[Any]) -> Dict[str, Any]:
    _check_file(path)
    try:
        with torch.serialization.safe_globals([*SAFE_GLOBALS, *safe_globals]):
            state = torch.load(path, map_location=map_location, weights_only=True)
    except OSError as e:
        raise CheckpointError(f"checkpoint {path} cannot be read: {e.strerror or e}") from None
    except Exception as e:  # noqa: BLE001 - torch raises many types for a bad file; each becomes one line
        raise CheckpointError(_load_failure(path, e)) from None
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {path} holds a {type(state).__name__}, not a dict of weights")
    return state


def _check_file(path: str) -> None:
    """Reasons visible before unpickling: missing, a folder, unreadable, empty, not a torch file, truncated."""
    if not os.path.exists(path):
        raise CheckpointNotFoundError(f"checkpoint {path} does not exist")
    if os.path.isdir(path):
        raise CheckpointError(f"checkpoint {path} is a folder, not a checkpoint file")
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError as e:
        raise CheckpointError(f"checkpoint {path} cannot be read: {e.strerror or e}") from None
    if not head:
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes): an unfinished write or copy")
    if head == _ZIP_MAGIC:
        # The zip index sits at the end of the file: a cut-off copy loses it first.
        if not zipfile.is_zipfile(path):
            raise CheckpointError(f"checkpoint {path} is truncated or corrupt (its zip index is missing): "
                                  "an unfinished write or copy")
    elif head != _LEGACY_MAGIC:
        raise CheckpointError(f"checkpoint {path} is not a PyTorch checkpoint (neither torch.save's zip format "
                              "nor its legacy format)")


def _load_failure(path: str, e: Exception) -> str:
    text = str(e)
    disallowed = re.search(r"GLOBAL ([\w.]+)", text)
    if disallowed:
        return (f"refusing checkpoint {path}: it needs code to load (disallowed global {disallowed.group(1)}); "
                "avssl loads checkpoints with weights_only=True, reading tensors and plain values only")
    if "weights only" in text.lower() or "weights_only" in text:
        first = next((ln.strip() for ln in text.splitlines() if "Unsupported" in ln), "an unsupported pickle")
        return (f"refusing checkpoint {path}: it is not a plain weights file ({first}); "
                "avssl loads checkpoints with weights_only=True")
    first = text.strip().splitlines()[0] if text.strip() else type(e).__name__
    return f"checkpoint {path} is truncated or corrupt ({type(e).__name__}: {first})"


def resume_checkpoint(ckpt_dir: str) -> Optional[str]:
    """The checkpoint a run in ``ckpt_dir`` resumes from: ``last.ckpt`` when it reads, else the one before it
    (``last.prev.ckpt``, with a logged warning), else ``None`` when the run has no checkpoint yet.

    Raises :class:`CheckpointError` naming both files when checkpoints exist but none can be read.
    """
    last, previous = os.path.join(ckpt_dir, LAST), os.path.join(ckpt_dir, PREVIOUS)
    failures: List[str] = []
    for path in (last, previous):
        if not os.path.exists(path):
            continue
        try:
            state = load_checkpoint(path)
        except CheckpointError as e:
            failures.append(str(e))
            continue
        if path == previous:
            why = failures[0] if failures else f"{last} is missing (a save was interrupted)"
            log.warning("%s; resuming from %s (step %s) instead", why, path, state.get("global_step", "?"))
        return path
    if failures:
        raise CheckpointError(f"cannot resume the run in {ckpt_dir}: {'; '.join(failures)}. Start afresh with "
                              "--no-resume (the old files are set aside), or use another output_dir")
    return None


def rename_keys(state_dict: Dict[str, Any], prefix: str, renames: Iterable[tuple]) -> None:
    """Rename, in place, the keys of ``state_dict`` under ``prefix`` that start with an old name of
    ``renames`` ((old, new) pairs, the first match wins), so checkpoints written before a module was renamed
    still load strictly. Used from ``load_state_dict`` pre-hooks (which receive the module's ``prefix``)."""
    renames = list(renames)
    for key in [k for k in state_dict if k.startswith(prefix)]:
        rest = key[len(prefix):]
        for old, new in renames:
            if rest.startswith(old) and prefix + new + rest[len(old):] not in state_dict:
                state_dict[prefix + new + rest[len(old):]] = state_dict.pop(key)
                break
