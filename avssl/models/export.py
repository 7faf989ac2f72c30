"""``avssl export``: one encoder of a training checkpoint as a plain state dict other code can load.

The file holds only tensors (``torch.load(FILE, weights_only=True)`` reads it) keyed as ``format`` names
them (:func:`avssl.models.export_weights`); ``FILE.json`` beside it names the encoder and its arguments,
the format, the avssl version and the source checkpoint, so the encoder can be rebuilt::

    meta = json.load(open("enc.pth.json"))
    enc = load_weights(build_encoder(meta["encoder"], **meta["kwargs"]), "enc.pth", format=meta["format"])
"""
from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Mapping, Optional

import torch

from avssl.models.weights import WeightsError, export_weights, load_weights

_MODALITIES = ("video", "audio", "image")


def encoder_parts(state_dict: Mapping[str, Any]) -> List[str]:
    """The encoders a method's state dict holds (``video_encoder``, ``audio_encoder``, ``target_encoder`` …)."""
    return sorted({k.split(".", 1)[0] for k in state_dict if k.split(".", 1)[0].endswith("_encoder")})


def _choose_part(checkpoint: str, parts: List[str], part: Optional[str]) -> str:
    if not parts:
        raise WeightsError(f"{checkpoint} holds no encoder (no '*_encoder.' weights in its state_dict)")
    if part is not None:
        if part not in parts:
            raise WeightsError(f"{checkpoint} has no part {part!r}; its encoders: {', '.join(parts)}")
        return part
    main = [p for p in parts if p[: -len("_encoder")] in _MODALITIES]
    if len(main) != 1:
        raise WeightsError(f"{checkpoint} holds several encoders ({', '.join(parts)}): choose one with --part")
    return main[0]


def _encoder_config(cfg: Mapping[str, Any], part: str, checkpoint: str) -> Dict[str, Any]:
    """``{"name", "kwargs"}`` of ``part`` from the config stored in the checkpoint."""
    modality = part[: -len("_encoder")]
    if modality not in _MODALITIES:  # a momentum copy (target_encoder, key_encoder) of the trained encoder
        modality = (cfg.get("method") or {}).get("modality") or "video"
    enc = (cfg.get("model") or {}).get(modality)
    if not enc or not enc.get("name"):
        raise WeightsError(f"{checkpoint}: its stored config has no model.{modality} to rebuild {part} from")
    return {"name": enc["name"], "kwargs": dict(enc.get("kwargs") or {})}


def export_encoder(checkpoint: str, out: str, format: str = "avssl", part: Optional[str] = None) -> Dict[str, Any]:
    """Write ``part`` of the avssl training checkpoint ``checkpoint`` to ``out`` in ``format`` and its
    description to ``out + ".json"`` (both atomically); returns that description.

    ``part`` defaults to the checkpoint's one video/audio/image encoder. Raises :class:`WeightsError` for a
    file that is not an avssl training checkpoint, an unknown part, or a format the encoder has no layout in.
    """
    import avssl
    from avssl.checkpoint import load_checkpoint
    from avssl.models import build_encoder
    from avssl.utils import atomic_write, atomic_write_text

    state = load_checkpoint(checkpoint)
    sd = state.get("state_dict")
    cfg = (state.get("hyper_parameters") or {}).get("config")
    if not isinstance(sd, Mapping) or not isinstance(cfg, Mapping):
        raise WeightsError(f"{checkpoint} is not an avssl training checkpoint (it needs a state_dict and the stored "
                           "config): export reads what avssl pretrain / finetune write")
    part = _choose_part(checkpoint, encoder_parts(sd), part)
    enc_cfg = _encoder_config(cfg, part, checkpoint)
    encoder = build_encoder(enc_cfg["name"], **enc_cfg["kwargs"])
    load_weights(encoder, sd, format="avssl", part=part, what=f"{checkpoint} ({part})")
    weights = export_weights(encoder, format)
    meta = {
        "encoder": enc_cfg["name"],
        "kwargs": enc_cfg["kwargs"],
        "format": format,
        "part": part,
        "out_dim": int(encoder.out_dim),
        "tensors": len(weights),
        "avssl_version": avssl.__version__,
        "source_checkpoint": os.path.abspath(checkpoint),
        "global_step": state.get("global_step"),
    }
    atomic_write(out, lambda f: torch.save(weights, f))
    atomic_write_text(out + ".json", json.dumps(meta, indent=2, sort_keys=False) + "\n")
    return meta
