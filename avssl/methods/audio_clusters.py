"""Learning video from ambient sound: predict, from the frames, which cluster a clip's sound falls in.

Owens et al. (2016, "Ambient sound provides supervision for visual learning") cluster summary
statistics of each video's sound and train the visual network to predict the cluster from the frames;
no labels are used. Here the sound is summarised by a fixed audio encoder (``model.audio``: a
pretrained one via ``method.audio_checkpoint``, or a randomly initialised conv net, whose features of
distinctive sounds already group them), the clusters are k-means over the training videos' audio
features (``num_clusters``, recomputed every ``recluster_every_epochs`` if > 0; :func:`avssl.cluster.kmeans`
on the method's device), and the video encoder + a linear classifier learn the cluster ids with cross-entropy.
The pseudo-labels are a buffer, so checkpoints and resumed runs keep them. Under DDP the sounds are embedded
rank by rank (each its share of the videos) and rank 0's clusters are sent to every rank, so the ranks keep
the same pseudo-labels without DDP's buffer broadcast.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Dict, Optional

import torch
import torch.nn.functional as F

from avssl.cluster import kmeans
from avssl.data.batch import flatten_views
from avssl.losses.distributed import world_info
from avssl.methods import METHODS
from avssl.methods.audiovisual import AudioVisualMethod
from avssl.methods.base import BaseMethodConfig

log = logging.getLogger(__name__)


@dataclass
class AudioClustersConfig(BaseMethodConfig):
    name: str = "audio_clusters"
    num_clusters: int = 20
    kmeans_iterations: int = 50
    kmeans_restarts: int = 5
    recluster_every_epochs: int = 0  # 0: cluster once, before the first epoch
    dropout: float = 0.0
    audio_checkpoint: Optional[str] = None  # a checkpoint whose audio encoder summarises the sound


@METHODS.register("audio_clusters")
class AudioClusters(AudioVisualMethod):
    Config = AudioClustersConfig
    modalities = ("video",)  # training batches need no sound: the clusters are computed up front
    heads = False
    syncs_own_buffers = True  # the pseudo-labels: rank 0's, sent to every rank when computed

    def __init__(self, cfg: Any, **kw: Any) -> None:
        m = cfg.method
        if m.num_clusters < 2:
            raise ValueError(f"method.num_clusters must be >= 2, got {m.num_clusters}")
        super().__init__(cfg, **kw)
        if m.audio_checkpoint:
            from avssl.methods.supervised import load_encoder_weights

            load_encoder_weights(self.audio_encoder, m.audio_checkpoint, "audio", what="method.audio_checkpoint")
        from avssl.models.heads import ClassificationHead

        self.classifier = ClassificationHead(self.video_encoder.out_dim, m.num_clusters, dropout=m.dropout)
        self.register_buffer("pseudo_labels", torch.empty(0, dtype=torch.long))
        self.register_buffer("clustered_epoch", torch.tensor(-1))
        self._register_load_state_dict_pre_hook(self._load_older)

    def audio_frozen(self) -> bool:
        return True  # fixed, BatchNorm statistics included: it only summarises the sound

    def _load_older(self, state_dict: Dict[str, Any], prefix: str, *args: Any) -> None:
        from avssl.checkpoint import rename_keys

        # The classifier was a Sequential(Dropout, Linear) before it became a ClassificationHead.
        rename_keys(state_dict, prefix, (("classifier.1.", "classifier.fc."),))
        # The pseudo-labels' length is the training set's, known only once clustered.
        labels = state_dict.get(f"{prefix}pseudo_labels")
        if labels is not None:
            self.pseudo_labels = torch.empty_like(labels, device=self.pseudo_labels.device)

    # -- clustering ------------------------------------------------------------------------------
    def audio_features(self) -> torch.Tensor:
        """N×D audio features of the training videos (test-style clips, averaged per video, L2-normalised),
        row i = video i."""
        return self.embed_dataset("train", ("audio",))["audio"]

    def cluster(self) -> None:
        m = self.cfg.method
        feats = self.audio_features()
        labels = kmeans(feats, m.num_clusters, m.kmeans_iterations, m.kmeans_restarts, seed=self.cfg.seed,
                        device=self.device).to(self.device)
        _, world = world_info()
        if world > 1:  # the same features give the same clusters, but one rank's labels make that certain
            torch.distributed.broadcast(labels, src=0)
        self.pseudo_labels = labels.to(self.pseudo_labels.device)
        labels = labels.cpu()
        sizes = torch.bincount(labels, minlength=m.num_clusters)
        log.info("audio clusters: %d videos in %d clusters (sizes %d..%d)", len(labels), m.num_clusters,
                 int(sizes.min()), int(sizes.max()))

    def on_train_epoch_start(self) -> None:
        e, m = self.current_epoch, self.cfg.method
        due = self.pseudo_labels.numel() == 0 or (
            m.recluster_every_epochs > 0 and e % m.recluster_every_epochs == 0 and int(self.clustered_epoch) != e)
        if due:
            self.cluster()
            self.clustered_epoch.fill_(e)

    # -- training --------------------------------------------------------------------------------
    def compute_loss(self, batch: Dict[str, Any]) -> Dict[str, torch.Tensor]:
        if self.pseudo_labels.numel() == 0:
            raise RuntimeError("audio_clusters: no pseudo-labels yet; they are computed at the start of training")
        video, views = flatten_views(batch["video"], "video")
        target = self.pseudo_labels[batch["index"].to(self.pseudo_labels.device)].repeat_interleave(views)
        logits = self.classifier(self.video_encoder(video))
        loss = F.cross_entropy(logits.float(), target)
        acc = (logits.argmax(1) == target).float().mean()
        return {"loss": loss, "cluster_acc": acc}
