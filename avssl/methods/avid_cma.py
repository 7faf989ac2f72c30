"""Audio-visual instance discrimination with memory banks, then Cross-Modal Agreement (AVID-CMA).

A video encoder and an audio encoder, each followed by an MLP projection (512→512→128 in the recipe, no
BatchNorm; ``proj_batch_norm`` / ``proj_last_bn`` add it; see :class:`avssl.methods.audiovisual.AudioVisualMethod`),
embed every clip; one memory bank per
modality keeps a momentum-averaged embedding per training instance. Stage 1 (AVID,
:class:`avssl.losses.audiovisual.AVIDLoss`): each clip's video must pick its own audio-bank row among
other instances' rows and vice versa. Stage 2 (CMA, from ``cma_start_epoch``,
:class:`avssl.losses.audiovisual.CMALoss`): in addition, each clip must pick, within its own modality,
the bank rows of its positive set — the ``cma_k`` instances that agree with it in both the video and the
audio bank — recomputed every ``cma_every_epochs`` epochs. No labels are used.

The banks need N, the number of training instances: ``method.num_data``, or, when it is None, the
length of the training set, read in :meth:`AvidCMA.setup` (Lightning calls ``setup`` before it restores
a checkpoint, so a resumed run finds the banks in place). The value found is written into the stored
config, and loading a state dict builds the banks from its shapes, so :func:`avssl.engine.load_method`
works either way.

Starting from another run (``method.init_from: CKPT``, e.g. CMA on your own data from an AVID model):
the checkpoint's encoders initialise this run, and its heads where their shapes match. Each bank row
belongs to one training instance, so the banks carry a fingerprint of the training set they index (a
hash of its videos in order, the ``bank_fingerprint`` buffer). The checkpoint's banks are taken when the
fingerprints match; otherwise — another corpus, another split, or a checkpoint without banks — both
banks are rebuilt by embedding every training video (one centre clip, no augmentation, the loaded
encoders and heads, L2-normalised) before the first epoch, so CMA can start at epoch 0
(``cma_start_epoch: 0``). The log says which case applied.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Optional

import torch
import torch.nn as nn

from avssl.data.batch import flatten_views
from avssl.losses.audiovisual import AVIDLoss, CMALoss
from avssl.methods import METHODS
from avssl.methods.audiovisual import AudioVisualConfig, AudioVisualMethod


@dataclass
class AvidCMAConfig(AudioVisualConfig):
    name: str = "avid_cma"
    # Number of training instances (rows of each bank); None: the training set's length at setup.
    num_data: Optional[int] = None
    variant: str = "cross"  # AVID stage: cross | self | joint (must be cross when CMA is used)
    num_negatives: Optional[int] = 1024  # null: every other bank row
    temperature: float = 0.07
    momentum: float = 0.5
    objective: str = "info_nce"  # info_nce | nce
    cma_start_epoch: int = -1  # -1: AVID only
    cma_every_epochs: int = 5  # recompute the positive sets every R epochs from cma_start_epoch
    cma_k: int = 32
    cma_agreement: str = "min"  # min | max | video | audio
    cma_num_positive_negatives: Optional[int] = 64  # null: every bank row outside the positive set
    xmodal_weight: float = 0.5
    wmodal_weight: float = 0.5
    cma_chunk_size: int = 4096
    # Storage of the two banks: float32, or bfloat16 to halve their memory (AudioSet's 1.8M × 128 rows:
    # 0.92 GB per bank in fp32, 0.46 GB in bf16); scores are always computed in fp32.
    bank_dtype: str = "float32"
    # An avid_cma (or any audio-visual) checkpoint whose encoders (and heads, where they fit) start this
    # run; its memory banks are kept when they were built on this training set, else rebuilt.
    init_from: Optional[str] = None
    rebuild_batch_size: int = 32  # clips per batch when the banks are rebuilt from the encoders


_BANK_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def dataset_fingerprint(dataset: Any) -> int:
    """A 63-bit hash of the videos a dataset lists, in order (file names and clip windows), or of its length
    when it has no rows: equal for the same training set, different for another corpus or split."""
    import hashlib
    import os

    rows = getattr(dataset, "rows", None)
    h = hashlib.sha1()
    if rows is None:
        h.update(f"len={len(dataset)}".encode())
    else:
        for r in rows:
            window = r.window_in_path() if hasattr(r, "window_in_path") else None
            h.update(f"{os.path.basename(str(getattr(r, 'path', r)))}|{window}\n".encode())
    return int.from_bytes(h.digest()[:8], "big") >> 1 or 1


@METHODS.register("avid_cma")
class AvidCMA(AudioVisualMethod):
    """AVID (``cma_start_epoch = -1``) or AVID followed by CMA.

    With CMA the method holds a single :class:`CMALoss`: until its positive sets exist it is Cross-AVID,
    so the AVID stage and the CMA stage train the same banks and no state is handed over between them.
    ``criterion`` is None until N is known (see the module docstring).
    """

    Config = AvidCMAConfig
    syncs_own_buffers = True  # the banks: updated from every rank's gathered embeddings; positive sets all-gathered

    positives_epoch: torch.Tensor

    def __init__(self, cfg: Any, **kw: Any) -> None:
        m = cfg.method
        if m.cma_start_epoch >= 0 and m.variant != "cross":
            raise ValueError(f"method.variant={m.variant!r} cannot be combined with method.cma_start_epoch="
                             f"{m.cma_start_epoch}: the CMA stage continues Cross-AVID; use variant 'cross' "
                             "or cma_start_epoch=-1")
        if m.cma_every_epochs < 1:
            raise ValueError(f"method.cma_every_epochs must be >= 1, got {m.cma_every_epochs}")
        if m.bank_dtype not in _BANK_DTYPES:
            raise ValueError(f"method.bank_dtype must be one of {', '.join(_BANK_DTYPES)}, got {m.bank_dtype!r}")
        if m.num_data is not None and m.num_data < 2:
            raise ValueError(f"method.num_data must be >= 2 or None (the training set size), got {m.num_data}")
        # No BatchNorm in the projections by default, as in the AVID-CMA recipe. Pooled post-ReLU features
        # share a large offset that BN-free heads keep, so on small encoders proj_batch_norm can matter.
        super().__init__(cfg, **kw)
        self.criterion: Optional[nn.Module] = None
        if m.num_data is not None:
            self._build_criterion(int(m.num_data))
        # The epoch whose start last recomputed the positive sets (-1: never). A buffer, so a run resumed
        # mid-epoch does not recompute them from banks that have already moved on.
        self.register_buffer("positives_epoch", torch.tensor(-1, dtype=torch.long))
        # Hash of the training set the bank rows index (0: unknown, e.g. banks never built against data).
        self.register_buffer("bank_fingerprint", torch.tensor(0, dtype=torch.long))
        self._register_load_state_dict_pre_hook(self._build_from_state)

    # -- building --------------------------------------------------------------------------------
    @property
    def uses_cma(self) -> bool:
        return self.cfg.method.cma_start_epoch >= 0

    def _build_criterion(self, num_data: int) -> None:
        m = self.cfg.method
        common = dict(num_data=num_data, dim=m.proj_dim, num_negatives=m.num_negatives, temperature=m.temperature,
                      momentum=m.momentum, objective=m.objective, seed=int(self.cfg.seed),
                      bank_dtype=_BANK_DTYPES[m.bank_dtype])
        if self.uses_cma:
            crit: nn.Module = CMALoss(num_positive_negatives=m.cma_num_positive_negatives, k=m.cma_k,
                                      agreement=m.cma_agreement, xmodal_weight=m.xmodal_weight,
                                      wmodal_weight=m.wmodal_weight, **common)
        else:
            crit = AVIDLoss(variant=m.variant, **common)
        self.criterion = crit.to(self.device)
        # Record N in the stored config so a checkpoint rebuilds the same banks.
        stored = self.hparams.get("config") if hasattr(self, "hparams") else None
        if isinstance(stored, dict) and isinstance(stored.get("method"), dict):
            stored["method"]["num_data"] = num_data

    def _build_from_state(self, state_dict: Dict[str, Any], prefix: str, *args: Any) -> None:
        # Checkpoints written before banks carried a fingerprint: "unknown" (0), so init_from rebuilds.
        state_dict.setdefault(f"{prefix}bank_fingerprint", torch.tensor(0, dtype=torch.long))
        if self.criterion is not None:
            return
        key = f"{prefix}criterion.video_bank.weight"
        if key in state_dict:
            self._build_criterion(int(state_dict[key].shape[0]))

    def setup(self, stage: str) -> None:
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        train_set = getattr(dm, "train_set", None)
        if self.criterion is None:
            if train_set is None:
                if stage == "fit":
                    raise ValueError("avid_cma: method.num_data is not set and the datamodule has no train_set to "
                                     "size the memory banks from; set method.num_data")
                return
            self._build_criterion(len(train_set))
        if stage != "fit" or train_set is None:
            return
        fingerprint = dataset_fingerprint(train_set)
        if self.cfg.method.init_from and int(self.global_step) == 0:
            self.init_from_checkpoint(str(self.cfg.method.init_from), train_set, fingerprint)
        elif int(self.bank_fingerprint) == 0:
            self.bank_fingerprint.fill_(fingerprint)

    # -- starting from another run -----------------------------------------------------------------
    def init_from_checkpoint(self, path: str, train_set: Any, fingerprint: int) -> str:
        """Load encoders (and fitting heads) from ``path``; keep its banks if they index ``train_set``,
        else rebuild them. Returns ``"kept"`` or ``"rebuilt (<why>)"``."""
        import logging

        from avssl.checkpoint import load_checkpoint

        log = logging.getLogger(__name__)
        state = load_checkpoint(path, what="method.init_from")
        sd = state.get("state_dict", state)
        own = self.state_dict()
        for prefix in ("video_encoder.", "audio_encoder."):
            part = {k: v for k, v in sd.items() if k.startswith(prefix)}
            if not part:
                raise KeyError(f"method.init_from: {path} has no {prefix[:-1]} weights (keys starting with "
                               f"{prefix!r}); it must come from an audio-visual method")
            bad = [k for k, v in part.items() if k not in own or own[k].shape != v.shape]
            missing = [k for k in own if k.startswith(prefix) and k not in part]
            if bad or missing:
                raise ValueError(f"method.init_from: the {prefix[:-1]} of {path} does not fit model."
                                 f"{prefix.split('_')[0]} (mismatched keys: {(bad + missing)[:5]})")
        take = {k: v for k, v in sd.items() if k.split(".")[0] in ("video_encoder", "audio_encoder", "video_head",
                                                                  "audio_head") and k in own
                and own[k].shape == v.shape}
        self.load_state_dict({**own, **take}, strict=True)
        crit = self._require_criterion()
        bank_keys = ("criterion.video_bank.weight", "criterion.audio_bank.weight")
        theirs = int(sd["bank_fingerprint"]) if "bank_fingerprint" in sd else 0
        if all(k in sd and sd[k].shape == own[k].shape for k in bank_keys) and theirs == fingerprint:
            crit.video_bank.weight.copy_(sd[bank_keys[0]])
            crit.audio_bank.weight.copy_(sd[bank_keys[1]])
            self.bank_fingerprint.fill_(fingerprint)
            log.info("avid_cma: initialised from %s; its memory banks index this training set and are kept", path)
            return "kept"
        why = ("it has no memory banks" if not all(k in sd for k in bank_keys)
               else "they index another training set")
        self.rebuild_banks(train_set)
        self.bank_fingerprint.fill_(fingerprint)
        log.info("avid_cma: initialised from %s; memory banks rebuilt from its encoders (%s)", path, why)
        return f"rebuilt ({why})"

    def rebuild_banks(self, train_set: Any) -> None:
        """Fill both banks with the current encoders' embeddings of every training video (one centre clip)."""
        from omegaconf import OmegaConf

        from avssl.data.datamodule import make_dataset

        cfg = OmegaConf.create(OmegaConf.to_container(self.cfg, resolve=True)) if OmegaConf.is_config(self.cfg) \
            else self.cfg
        cfg.data.test_clips, cfg.data.test_crops = 1, 1
        ds = make_dataset(cfg, "train", train=False, needs_audio=True)
        if len(ds) != len(train_set):
            raise RuntimeError(f"avid_cma: rebuilding the banks found {len(ds)} training videos, the training set "
                               f"has {len(train_set)}")
        z = self.embed_dataset(ds, batch_size=int(self.cfg.method.rebuild_batch_size), progress=True)
        crit = self._require_criterion()
        crit.video_bank.weight.copy_(z["video"].to(crit.video_bank.weight))
        crit.audio_bank.weight.copy_(z["audio"].to(crit.audio_bank.weight))

    def _require_criterion(self) -> nn.Module:
        if self.criterion is None:
            raise RuntimeError("avid_cma: the memory banks are not built yet; set method.num_data, or train with "
                               "a datamodule that has a train_set (they are sized at setup)")
        return self.criterion

    # -- training --------------------------------------------------------------------------------
    def compute_loss(self, batch: Dict[str, Any]) -> Dict[str, torch.Tensor]:
        """batch["video"] B×C×T×H×W or B×V×C×T×H×W, batch["audio"] B×1×F×T' or B×V×1×F×T', batch["index"] B
        (training-set indices, the bank rows) -> {"loss", per-term losses}. Updates the banks."""
        crit = self._require_criterion()
        video, vv = flatten_views(batch["video"], "video")
        audio, va = flatten_views(batch["audio"], "audio")
        if vv != va:
            raise ValueError(f"avid_cma: video has {vv} views per clip but audio has {va}")
        index = torch.as_tensor(batch["index"], device=video.device).reshape(-1).long()
        if index.numel() * vv != video.shape[0]:
            raise ValueError(f"avid_cma: batch['index'] has {index.numel()} entries for {video.shape[0] // vv} clips")
        # Every view of a clip belongs to the same instance, hence the same bank row.
        index = index.repeat_interleave(vv)
        zv, za = self.embed(video, audio)
        loss = crit(zv, za, index)
        out: Dict[str, torch.Tensor] = {"loss": loss}
        for name, value in crit.last_terms.items():
            out[name] = torch.tensor(value, device=loss.device)
        return out

    def on_train_epoch_start(self) -> None:
        m = self.cfg.method
        e = int(self.current_epoch)
        if not self.uses_cma or e < m.cma_start_epoch or (e - m.cma_start_epoch) % m.cma_every_epochs:
            return
        if int(self.positives_epoch) == e:
            return  # resumed inside this epoch: the sets were computed at its start and restored
        crit = self._require_criterion()
        assert isinstance(crit, CMALoss)
        crit.update_positives(chunk_size=m.cma_chunk_size, device=self.device, progress=False)
        self.positives_epoch.fill_(e)
