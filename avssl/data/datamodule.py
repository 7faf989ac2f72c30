"""LightningDataModule over :class:`~avssl.data.VideoDataset`, built from a config's ``data`` section.

Samplers are built here rather than by Lightning: a ``DistributedSampler`` seeded with the run's seed
splits each epoch's shuffled order across ranks (every video once per epoch over all ranks), and
``set_epoch`` reshuffles, so a resumed run sees the same order an uninterrupted one would have.

The training loader is resumable (:class:`ResumableLoader`): its position within the epoch is saved in every
checkpoint, so a run resumed from a mid-epoch checkpoint trains on exactly the rest of that epoch.

Loader workers are persistent (they keep their open files and probe results from one epoch to the next);
each index the training sampler hands out carries its epoch, which the worker gives its copy of the dataset
before reading the item, so the per-item random draws are those of that epoch.
"""
from __future__ import annotations

from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import lightning as L
import torch
from torch.utils.data import DataLoader, DistributedSampler, IterableDataset, get_worker_info

from avssl.data.datasets import VideoDataset


def _backend(d: Any) -> str:
    """``data.backend`` as it will read: ``decord`` falls back to PyAV, with a warning, where it is not installed."""
    from avssl.data.decoding import resolve_backend

    return resolve_backend(d.backend, strict=False)


def _audio_transform(d: Any, train: bool):
    from avssl.data.audio import build_audio_transform

    return build_audio_transform(d.audio_features, train=train, sample_rate=d.audio_rate)


def _video_transform(d: Any, train: bool, crops: int = 1):
    from avssl.data.transforms import build_video_transform

    kw: Dict[str, Any] = {"train": train, "crop_size": d.crop_size}
    if train and d.min_short_side:
        kw["min_scale"] = d.min_short_side
    if train and d.max_short_side:
        kw["max_scale"] = d.max_short_side
    if not train:
        kw["test_crops"] = crops
    return build_video_transform(**kw)


#: The generated digit sets (``data.train`` names): the digits in colour at a random place, with or
#: without clutter (see :func:`avssl.data.images.cluttered_digits`).
CLUTTER = {"digits_cluttered": {"distractors": 2, "scale": (0.45, 0.75)},
           "digits_colour": {"distractors": 0, "scale": (0.65, 0.9)}}


def make_image_dataset(cfg: Any, part: str, train: bool) -> Any:
    """An image dataset (``data.kind: image``) over the ``part`` ("train" or "val") of ``cfg.data``.

    ``data.train`` names the images: ``digits`` (scikit-learn's bundled handwritten digits; val = its
    held-out split), ``digits_cluttered`` (the same digits in colour at random places over clutter, see
    :func:`avssl.data.images.cluttered_digits`), ``digits_colour`` (larger, without the clutter), a folder per class (``data.val`` another folder), or a video corpus whose frames
    are the images (manifest / folder tree, ``data.frames_per_video`` frames per video, split by
    ``train_split`` / ``val_split``). Training items carry the views of ``data.augment``, by default the
    recipe the method declares (its class's ``augment``: ``byol``'s asymmetric pair, ``swav``'s multi-crop,
    SimCLR's for methods without a recipe of their own); evaluation items one centre view.
    """
    import os

    from avssl.data.image_transforms import EvalImageTransform, build_image_augment
    from avssl.data.images import DigitsDataset, ImageFolderDataset, VideoFramesDataset

    d = cfg.data
    if d.label_fraction < 1.0:
        from avssl.config import ConfigError

        raise ConfigError("data.label_fraction applies to video data (data.kind: video), not to images; "
                          "leave it at 1.0")
    if train:
        recipe = d.augment or default_augment(cfg)
        try:
            transform: Any = build_image_augment(recipe, d.image_size, **dict(d.augment_kwargs or {}))
        except TypeError as e:
            raise ValueError(f"data.augment_kwargs {dict(d.augment_kwargs or {})} do not fit the {recipe!r} "
                             f"augmentation: {e}") from None
    else:
        transform = EvalImageTransform(d.image_size)
    src = _source(d, part, "'digits', a folder of class folders, or a video manifest",
                  generated=("digits", *CLUTTER))
    if (d.image_copies != 1 or d.positives_across_copies) and src not in CLUTTER:
        raise ValueError(f"data.image_copies / data.positives_across_copies apply to the generated sets "
                         f"{sorted(CLUTTER)}, not to data.train={src!r}")
    if src in CLUTTER:
        from avssl.data.images import ClutteredDigitsDataset

        # More renderings only for training: the held-out split stays one rendering per test digit.
        return ClutteredDigitsDataset("train" if part == "train" else "test", size=d.image_size, transform=transform,
                                      seed=cfg.seed, copies=d.image_copies if part == "train" else 1,
                                      group_copies=d.positives_across_copies and part == "train", **CLUTTER[src])
    if src == "digits":
        return DigitsDataset("train" if part == "train" else "test", size=d.image_size, transform=transform,
                             seed=cfg.seed)
    if os.path.isdir(src) and d.video_root is None and not _looks_like_videos(src):
        return ImageFolderDataset(src, transform=transform, seed=cfg.seed, max_failure_fraction=d.max_failure_fraction)
    split = d.train_split if part == "train" else d.val_split
    return VideoFramesDataset(src, split=split or None, frames_per_video=d.frames_per_video, size=d.image_size,
                              transform=transform, seed=cfg.seed, video_root=d.video_root,
                              max_failure_fraction=d.max_failure_fraction, backend=_backend(d))


def default_augment(cfg: Any) -> str:
    """The image view recipe of ``cfg``'s method (its class's ``augment``), used when ``data.augment`` is unset."""
    from avssl.methods import method_class

    return method_class(cfg.method.name).augment


def _source(d: Any, part: str, expected: str, generated: Sequence[str] = ()) -> str:
    """The data source of ``part`` (``data.val`` defaults to ``data.train``), checked to be set and to
    exist (as must ``data.video_root`` when set), with errors naming the key."""
    import os

    from avssl.config import ConfigError
    from avssl.errors import PathError

    key = "data.val" if part == "val" and d.val else "data.train"
    src = d.val if key == "data.val" else d.train
    if src is None:
        raise ConfigError(f"data.train is not set: point it at {expected}")
    if src not in generated and not os.path.exists(src):
        raise PathError(f"{key}: {src} does not exist; point it at {expected}")
    if d.video_root is not None and src not in generated and not os.path.isdir(d.video_root):
        raise PathError(f"data.video_root: {d.video_root} is not a folder; set it to the folder the videos are under")
    return src


def _looks_like_videos(folder: str) -> bool:
    import os

    from avssl.data.manifest import VIDEO_EXTENSIONS

    for _, _, files in os.walk(folder):
        for f in files:
            if f.lower().endswith(tuple(VIDEO_EXTENSIONS)):
                return True
    return False


def make_dataset(cfg: Any, part: str, train: bool, needs_audio: bool) -> Any:
    """A VideoDataset over the ``part`` ("train" or "val") of ``cfg.data`` (an image dataset with
    ``data.kind: image``, see :func:`make_image_dataset`).

    ``train=True`` gives random clips with training augmentation; ``train=False`` gives the test views
    (``data.test_clips`` uniform clips × ``data.test_crops`` crops) — also used on the train part to
    extract features for linear probes and kNN. ``data.label_fraction`` < 1 keeps that class-balanced, seeded
    share of the train part's videos (:func:`~avssl.data.datasets.label_subset`); ``data.fold`` picks the
    official split of a folder of UCF-101/HMDB-51 split files.
    """
    d = cfg.data
    if part not in ("train", "val"):
        raise ValueError(f"part must be 'train' or 'val', got {part!r}")
    if d.kind == "image":
        return make_image_dataset(cfg, part, train)
    if d.kind != "video":
        raise ValueError(f"data.kind must be 'video' or 'image', got {d.kind!r}")
    src = _source(d, part, "a manifest.csv, a folder tree, a Kinetics CSV or a split file")
    wanted_split = d.train_split if part == "train" else d.val_split
    source: Any = src
    if part == "train" and d.label_fraction < 1.0:
        from avssl.data.datasets import label_subset, select_rows

        source = label_subset(select_rows(src, d.video_root, wanted_split or None, fold=d.fold), d.label_fraction,
                              seed=cfg.seed)
    return VideoDataset(
        source,
        video_root=d.video_root,
        split=wanted_split or None,
        fold=d.fold,
        num_frames=d.num_frames,
        clip_duration=d.num_frames / d.fps,
        sampling="random" if train else "uniform",
        num_clips=d.views if train else d.test_clips,
        video_transform=_video_transform(d, train, 1 if train else d.test_crops),
        crop_size=d.crop_size,
        audio=needs_audio,
        audio_rate=d.audio_rate,
        audio_duration=d.audio_seconds,
        audio_transform=_audio_transform(d, train) if needs_audio else None,
        max_av_offset=d.max_av_offset if train else 0.0,
        max_failure_fraction=d.max_failure_fraction,
        backend=_backend(d),
        seed=cfg.seed,
    )


class ResumableSampler(DistributedSampler):
    """A seeded, epoch-aware ``DistributedSampler`` whose next pass can start part-way through its epoch's order.

    ``start_at(n)`` makes the next ``iter()`` skip the first ``n`` indices of this rank's order (once); its
    length stays that of the whole epoch, which is what Lightning counts batches against. It yields
    ``(epoch, index)`` pairs, for :class:`EpochIndexed`.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._start = 0

    def start_at(self, n: int) -> None:
        self._start = int(n)

    def __iter__(self) -> Iterator[Tuple[int, int]]:  # type: ignore[override]
        order = list(super().__iter__())
        start, self._start = self._start, 0
        epoch = int(self.epoch)
        return iter([(epoch, i) for i in order[start:]])


class EpochIndexed(torch.utils.data.Dataset):
    """A dataset read with ``(epoch, index)`` keys: the epoch is given to the dataset (``set_epoch``) before
    the item is read. Persistent loader workers keep their copy of the dataset across epochs, so the
    epoch has to travel with each index to reach it.
    """

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: Tuple[int, int]) -> Any:
        epoch, index = key
        if hasattr(self.dataset, "set_epoch") and getattr(self.dataset, "epoch", None) != epoch:
            self.dataset.set_epoch(epoch)
        return self.dataset[index]

    def __getattr__(self, name: str) -> Any:
        if name == "dataset" or name.startswith("__"):
            raise AttributeError(name)  # not set yet (unpickling): no recursion
        return getattr(self.dataset, name)


class ResumableLoader(DataLoader):
    """The training loader, with its position in the epoch as state: ``{"epoch", "batches"}`` (batches handed
    out this epoch). Lightning stores ``state_dict()`` in every checkpoint and passes it to ``load_state_dict``
    on resume; the next pass over the same epoch then starts after those batches, without decoding them.

    Each pass reads the epoch from its sampler (Lightning sets it, also on resume) and gives it to the dataset,
    so the per-item random draws are those of that epoch. Batches are counted as they leave the loader, so
    worker prefetching does not move the saved position. Worker seeds come from (seed, epoch), not from the
    global RNG, so starting a pass on resume leaves the training RNG (dropout, negatives) where it was saved.
    """

    def __init__(self, dataset: Any, sampler: ResumableSampler, seed: int = 0, **kwargs: Any) -> None:
        if not isinstance(dataset, EpochIndexed):
            dataset = EpochIndexed(dataset)
        super().__init__(dataset, sampler=sampler, **kwargs)
        self.seed = int(seed)
        self._position: Tuple[int, int] = (0, 0)
        self._resume_at: Optional[Tuple[int, int]] = None

    def __iter__(self) -> Iterator[Any]:  # type: ignore[override]
        return self._epoch_batches()

    def _epoch_batches(self) -> Iterator[Any]:
        # A generator: this runs at the first next(), after Lightning has set the sampler's epoch.
        epoch = int(self.sampler.epoch)
        skip = self._resume_at[1] if self._resume_at is not None and self._resume_at[0] == epoch else 0
        self._resume_at = None
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)
        self.sampler.start_at(skip * self.batch_size)
        self.generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        self._position = (epoch, skip)
        for batch in super().__iter__():
            self._position = (epoch, self._position[1] + 1)
            yield batch

    def state_dict(self) -> Dict[str, int]:
        return {"epoch": self._position[0], "batches": self._position[1]}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self._resume_at = (int(state["epoch"]), int(state["batches"]))


class VideoDataModule(L.LightningDataModule):
    """Train and validation loaders for a method (``modalities`` says whether audio is decoded;
    ``validate=False`` builds no validation set, for methods that have no validation step)."""

    def __init__(self, cfg: Any, modalities: Sequence[str] = ("video",), validate: bool = True) -> None:
        super().__init__()
        self.cfg = cfg
        self.needs_audio = "audio" in modalities
        self.validate = validate
        self.train_set: Optional[VideoDataset] = None
        self.val_set: Optional[VideoDataset] = None
        self._train_loader: Optional[ResumableLoader] = None
        self._train_position: Optional[Dict[str, Any]] = None  # restored before the loader exists
        self._loaders: List[DataLoader] = []  # to stop their persistent workers at teardown

    def _world(self) -> tuple[int, int]:
        t = self.trainer
        if t is not None:
            return t.global_rank, t.world_size
        return 0, 1

    def setup(self, stage: Optional[str] = None) -> None:
        if self.train_set is None:
            self.train_set = make_dataset(self.cfg, "train", train=True, needs_audio=self.needs_audio)
        if self.validate and self.val_set is None and (self.cfg.data.val or self.cfg.data.val_split):
            try:
                self.val_set = make_dataset(self.cfg, "val", train=False, needs_audio=self.needs_audio)
            except ValueError:
                self.val_set = None  # no rows for the validation split: train without validation

    @property
    def num_classes(self) -> int:
        ds = self.train_set or make_dataset(self.cfg, "train", train=True, needs_audio=False)
        return max(ds.labels) + 1

    def _loader_kwargs(self) -> Dict[str, Any]:
        d = self.cfg.data
        # Persistent workers keep their open files and probes; the training epoch reaches them with each index.
        return dict(batch_size=d.batch_size, num_workers=d.num_workers, pin_memory=torch.cuda.is_available(),
                    persistent_workers=d.num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        assert self.train_set is not None
        rank, world = self._world()
        sampler = ResumableSampler(self.train_set, num_replicas=world, rank=rank, shuffle=True, seed=self.cfg.seed,
                                   drop_last=True)
        loader = ResumableLoader(self.train_set, sampler, seed=self.cfg.seed, drop_last=True, **self._loader_kwargs())
        if self._train_position is not None:
            loader.load_state_dict(self._train_position)
            self._train_position = None
        self._train_loader = loader
        self._loaders.append(loader)
        return loader

    # The training loader's position goes into checkpoints through the datamodule's own state: Lightning does
    # not hand a stateful loader its state when the loader was built before the restore (which computing the
    # schedule's length from the loader does).
    def state_dict(self) -> Dict[str, Any]:
        return {"train_loader": self._train_loader.state_dict()} if self._train_loader is not None else {}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        position = state.get("train_loader")
        if position is None:
            return
        if self._train_loader is not None:
            self._train_loader.load_state_dict(position)
        else:
            self._train_position = dict(position)

    def teardown(self, stage: Optional[str] = None) -> None:
        """Stop the persistent loader workers of this run's loaders."""
        for loader in self._loaders:
            stop_workers(loader)
        self._loaders.clear()

    def val_dataloader(self) -> Any:
        if self.val_set is None:
            return []
        rank, world = self._world()
        sampler = DistributedSampler(self.val_set, num_replicas=world, rank=rank, shuffle=False, drop_last=False)
        # Its own generator: validating must not draw from the training RNG (a resume may skip a validation).
        loader = DataLoader(self.val_set, sampler=sampler, generator=torch.Generator().manual_seed(self.cfg.seed),
                            **self._loader_kwargs())
        self._loaders.append(loader)
        return loader


def stop_workers(loader: Any) -> None:
    """Shut down a loader's persistent workers now rather than when the loader is garbage-collected."""
    iterator = getattr(loader, "_iterator", None)
    if iterator is not None and hasattr(iterator, "_shutdown_workers"):
        iterator._shutdown_workers()
    if iterator is not None:
        loader._iterator = None


class ShardedIterable(IterableDataset):
    """An IterableDataset over ``dataset`` in which every item is yielded once across all ranks and
    loader workers: item ``i`` goes to shard ``i mod (world·workers)``.

    Use it for streaming corpora; ``VideoDataModule`` itself uses map-style datasets with a
    distributed sampler.
    """

    def __init__(self, dataset: Any, rank: int = 0, world_size: int = 1, shuffle: bool = False, seed: int = 0) -> None:
        self.dataset = dataset
        self.rank = rank
        self.world_size = world_size
        self.shuffle = shuffle
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def shard_indices(self, worker_id: int = 0, num_workers: int = 1) -> List[int]:
        n = len(self.dataset)
        order = list(range(n))
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(n, generator=g).tolist()
        shards = self.world_size * num_workers
        shard = self.rank * num_workers + worker_id
        return order[shard::shards]

    def __iter__(self) -> Iterator[Any]:
        info = get_worker_info()
        wid, nw = (info.id, info.num_workers) if info is not None else (0, 1)
        for i in self.shard_indices(wid, nw):
            yield self.dataset[i]


def item_names(ds: Any) -> List[str]:
    """One name per item of a dataset :func:`make_dataset` builds, for files of per-item results: a video's path,
    an image file's path, the video a frame was taken from, or ``<Dataset>[i]`` for images held in memory."""
    rows = getattr(ds, "rows", None)
    video_of = getattr(ds, "video_of", None)
    if rows is not None and video_of is not None:  # frames of videos
        return [rows[int(v)].path for v in video_of]
    if rows is not None:
        return [r.path for r in rows]
    samples = getattr(ds, "samples", None)
    if samples is not None:
        return [path for path, _ in samples]
    return [f"{type(ds).__name__}[{i}]" for i in range(len(ds))]
