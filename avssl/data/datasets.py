"""``VideoDataset``: clips of video (and their sound) from a manifest, a folder tree, a Kinetics CSV or
UCF-101/HMDB-51 split files.

Each item is a dict::

    {"video": C×T×H×W float (V×C×T×H×W when several views are asked for),
     "audio": 1×F×T' float (V×1×F×T') — absent when ``audio=False``,
     "has_audio": bool, "label": int (−1 unlabelled), "index": int,
     "start": float seconds (a float64 tensor V with several views)}

A sample that fails to decode is logged once with its path, counted, and replaced by another item; the
dataset raises only when failures exceed ``max_failure_fraction`` of the items tried.

The rows are held in columns (:class:`~avssl.data.manifest_table.ManifestTable`), which loader workers
share with the main process without copying. Each item opens its video once for all its views and their
sound (:class:`~avssl.data.decoding.MediaReader`), and reads the sound from the audio file ``avssl prep``
extracted (the row's ``audio_path``) when there is one. Each process keeps a bounded cache of probe results
(persistent loader workers keep theirs across epochs).

Readers are closed at the end of their item, not kept for the next one: decord decodes a window no faster
from a reader it has used (measured: about 10 % slower than from a new one), and a PyAV decoder left open
has threads, which a loader worker forked later inherits without them: freeing such a decoder in the worker
(its garbage collector may) waits for them forever.
"""
from __future__ import annotations

import logging
import os
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Dict, Hashable, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch.utils.data import Dataset

from avssl.data import sampling
from avssl.data.decoding import DecodeError, MediaReader, geometry_info, probe, resolve_backend, window_times
from avssl.data import manifest as _manifest
from avssl.data.manifest import ManifestRow
from avssl.data.manifest_table import ManifestTable
from avssl.errors import DataError, UserError

log = logging.getLogger(__name__)

Transform = Callable[[torch.Tensor], Union[torch.Tensor, List[torch.Tensor]]]


def load_rows(source: Union[str, os.PathLike], video_root: Optional[str] = None,
              fold: int = 1) -> Sequence[ManifestRow]:
    """Rows of any supported corpus description, recognised by what ``source`` is.

    * a directory: a folder-per-class tree, or a folder of UCF-101/HMDB-51 split files (official split
      ``fold``);
    * a ``.csv`` whose header has ``youtube_id``: a Kinetics annotation file (videos under
      ``video_root``, default the CSV's folder); any other ``.csv``: an ``avssl prep`` manifest, read into
      a :class:`~avssl.data.manifest_table.ManifestTable`;
    * a ``.txt``: UCF-101 (``trainlistNN``/``testlistNN``) or HMDB-51 (``*_splitN.txt``) split file.
    """
    path = os.fspath(source)
    if os.path.isdir(path):
        names = [n for n in os.listdir(path) if not n.startswith(".")]
        if names and all(n.endswith(".txt") for n in names):  # a folder of UCF/HMDB split files
            return _manifest.read_ucf_hmdb_splits(path, video_root or os.path.dirname(os.path.abspath(path)), fold=fold)
        return _manifest.scan_folder(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"dataset source not found: {path}")
    root = video_root or os.path.dirname(os.path.abspath(path))
    if path.endswith(".csv"):
        with open(path, newline="") as f:
            header = f.readline()
        if "youtube_id" in header:
            return _manifest.read_kinetics_csv(path, root)
        return ManifestTable.read_csv(path)
    if path.endswith(".txt"):
        return _manifest.read_ucf_hmdb_splits(path, root)
    raise ValueError(
        f"cannot tell what {path} is: expected a folder, a manifest or Kinetics .csv, or a UCF/HMDB split .txt"
    )


def select_rows(source: Any, video_root: Optional[str] = None, split: Optional[str] = None,
                fold: int = 1) -> ManifestTable:
    """The rows of ``source`` (a :class:`ManifestTable`, a list of rows, or anything :func:`load_rows`
    reads, a folder of split files for official split ``fold``) in ``split`` (None: all), as a table.

    Raises:
        DataError (a ``ValueError``) naming the source when nothing is left to read: it lists no
        videos, none in ``split``, or none of the files it lists exists.
    """
    if isinstance(source, ManifestTable):
        listed: Any = source
    elif isinstance(source, (list, tuple)):
        listed = list(source)
    else:
        listed = load_rows(source, video_root=video_root, fold=fold)
    where = "the given rows" if isinstance(source, (list, tuple, ManifestTable)) else os.fspath(source)
    if not len(listed):
        raise DataError(_nothing_listed(where, getattr(listed, "missing", None)))
    table = listed if isinstance(listed, ManifestTable) else ManifestTable.from_rows(listed)
    rows = table if split is None else table.take(table.where("split", split))
    if not len(rows):
        present = ", ".join(sorted(repr(s) if s else "none" for s in table.distinct("split")))
        raise DataError(f"no videos for split {split!r} in {where} (splits there: {present}); data.train_split / "
                        "data.val_split choose the split, null takes every video")
    # Stops at the first file found, so this costs one stat for a healthy corpus.
    if not any(os.path.exists(r.path) for r in rows):
        raise DataError(f"none of the {len(rows)} videos listed in {where} exists (first: {rows[0].path}); check "
                        "the paths (relative ones are read from the manifest's folder) or data.video_root")
    return rows


def label_subset(rows: Sequence[ManifestRow], fraction: float, seed: int = 0) -> List[ManifestRow]:
    """A class-balanced, seeded subset of the labelled ``rows``: ``max(1, round(fraction · n_c))`` of the n_c
    videos of each class c, in the rows' order (unlabelled rows are left out).

    Each class's videos are ranked by a permutation drawn from (``seed``, class name) and the first ones kept, so
    a smaller fraction keeps a subset of a larger one's, and a class's choice does not depend on the others.
    """
    import zlib

    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction!r}")
    by_class: Dict[str, List[int]] = {}
    for i, r in enumerate(rows):
        if r.label_index >= 0:
            by_class.setdefault(r.label, []).append(i)
    keep: set = set()
    for name, members in by_class.items():
        g = torch.Generator().manual_seed(int(seed) * 1_000_003 + zlib.crc32(name.encode("utf-8")))
        order = torch.randperm(len(members), generator=g).tolist()
        n = max(1, int(round(fraction * len(members))))
        keep.update(members[j] for j in order[:n])
    return [r for i, r in enumerate(rows) if i in keep]


def _nothing_listed(where: str, missing: Optional[List[Any]]) -> str:
    """Why a source gave no rows, in a line."""
    if missing:
        return (f"no videos in {where}: none of the {len(missing)} videos it names was found (first: "
                f"{missing[0].name}); check data.video_root, the folder the videos are under")
    if os.path.isdir(where):
        return (f"no videos in {where}: no video files ({', '.join(_manifest.VIDEO_EXTENSIONS)}) in this folder "
                "or its class folders")
    header = " (a header and no rows)" if where.endswith(".csv") else ""
    return f"no videos in {where}: it lists none{header}; run `avssl prep` to write a manifest"


def _takes_generator(fn: Any) -> bool:
    import inspect

    if isinstance(fn, torch.nn.Module):
        fn = fn.forward
    try:
        return "generator" in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


class TooManyDecodeErrors(UserError, RuntimeError):
    """More samples failed to decode than the configured fraction allows."""


@dataclass
class _FailureLog:
    tried: int = 0
    failed: int = 0


class _LRU:
    """At most ``size`` entries; the least recently used goes first."""

    def __init__(self, size: int) -> None:
        self.size = max(0, int(size))
        self.items: "OrderedDict[Hashable, Any]" = OrderedDict()

    def get(self, key: Hashable) -> Any:
        value = self.items.get(key)
        if value is not None:
            self.items.move_to_end(key)
        return value

    def put(self, key: Hashable, value: Any) -> None:
        if self.size == 0:
            return
        self.items[key] = value
        self.items.move_to_end(key)
        while len(self.items) > self.size:
            self.items.popitem(last=False)


class VideoDataset(Dataset):
    """Clips of videos with their audio.

    Args:
        source: a ``manifest.csv`` (from ``avssl prep``), a folder-per-class tree (``{class}/*.mp4`` or
            ``{split}/{class}/*.mp4``), a Kinetics CSV (``label,youtube_id,time_start,time_end,split``),
            a UCF-101 ``trainlist``/``testlist`` file or an HMDB-51 split file, or a list of
            :class:`~avssl.data.manifest.ManifestRow`.
        video_root: where the videos of a CSV or split file live (defaults to the file's folder).
        split: keep only rows of this split (``train``/``val``/``test``), when rows carry one.
        num_frames: T, frames per clip.
        clip_duration: seconds covered by a clip (default ``num_frames / 16``: 16 fps sampling).
        sampling: ``"random"`` — one random window per view (training); ``"uniform"`` — ``num_clips``
            evenly spaced windows (multi-view testing).
        num_clips: temporal views per item (random windows, or the K uniform test clips).
        video_transform: uint8 T×H×W×3 -> float C×T×H×W (or a list of crops, e.g. three-crop);
            default: the standard train (``sampling="random"``) or test pipeline at ``crop_size``.
        crop_size: spatial size of the default pipelines.
        audio: decode audio too.
        audio_rate, audio_duration: waveform rate and seconds of audio per clip (default: the clip's
            duration); the audio window is centred on the video window.
        audio_transform: waveform 1×S -> spectrogram 1×F×T' (default: log-mel at ``audio_rate``).
        max_av_offset: when > 0, each view's audio window is shifted by a random offset of up to this
            many seconds with probability ``av_offset_prob`` (audio-visual sync tasks); ``"av_in_sync"``
            is then returned per view.
        max_failure_fraction: raise :class:`TooManyDecodeErrors` when more than this fraction of the
            tried samples failed (checked after ``min_failures_before_stop`` failures).
        backend: ``"auto"`` (decord where installed, else PyAV), ``"decord"`` (an error where it is not
            installed) or ``"pyav"``.
        seed: seeds the per-item random draws (with the item index and an epoch set by
            :meth:`set_epoch`), so runs are reproducible whatever the number of workers.
        probe_cache: probe results each process keeps (videos not prepared by ``avssl prep``, whose
            rows do not carry them); the least recently used go first.

    Sound comes from the row's ``audio_path`` (the WAV ``avssl prep`` extracted) when it has one, and
    from the video's own track otherwise (or when that file is missing, with a warning).
        fold: the official split (1-3) read from a folder of UCF-101/HMDB-51 split files.
    """

    def __init__(
        self,
        source: Union[str, os.PathLike, Sequence[ManifestRow]],
        *,
        video_root: Optional[str] = None,
        split: Optional[str] = None,
        num_frames: int = 8,
        clip_duration: Optional[float] = None,
        sampling: str = "random",
        num_clips: int = 1,
        video_transform: Optional[Transform] = None,
        crop_size: int = 112,
        audio: bool = True,
        audio_rate: int = 16000,
        audio_duration: Optional[float] = None,
        audio_transform: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
        max_av_offset: float = 0.0,
        av_offset_prob: float = 0.5,
        max_failure_fraction: float = 0.1,
        min_failures_before_stop: int = 5,
        backend: str = "auto",
        seed: int = 0,
        probe_cache: int = 4096,
        fold: int = 1,
    ) -> None:
        if sampling not in ("random", "uniform"):
            raise ValueError(f"sampling must be 'random' or 'uniform', got {sampling!r}")
        if num_clips < 1:
            raise ValueError(f"num_clips must be >= 1, got {num_clips}")
        rows = select_rows(source, video_root, split, fold=fold)
        self.rows: ManifestTable = rows
        self.num_frames = num_frames
        self.clip_duration = clip_duration if clip_duration is not None else num_frames / 16.0
        self.sampling = sampling
        self.num_clips = num_clips
        self.train = sampling == "random"
        if video_transform is None:
            from avssl.data.transforms import build_video_transform

            video_transform = build_video_transform(train=self.train, crop_size=crop_size)
        self.video_transform = video_transform
        self.audio = audio
        self.audio_rate = audio_rate
        self.audio_duration = audio_duration if audio_duration is not None else self.clip_duration
        if audio and audio_transform is None:
            from avssl.data.audio import build_audio_transform

            audio_transform = build_audio_transform("logmel", train=self.train, sample_rate=audio_rate)
        self.audio_transform = audio_transform
        # avssl's transforms draw from the per-item generator, so items are reproducible; plain callables
        # (user transforms) are called without it.
        self._video_g = _takes_generator(video_transform)
        self._audio_g = audio_transform is not None and _takes_generator(audio_transform)
        self.max_av_offset = max_av_offset
        self.av_offset_prob = av_offset_prob
        self.max_failure_fraction = max_failure_fraction
        self.min_failures_before_stop = min_failures_before_stop
        self.backend = resolve_backend(backend)
        self.seed = seed
        self.epoch = 0
        self._failures = _FailureLog()
        self._bad: set[int] = set()
        self._no_audio_file: set[int] = set()
        self._probes = _LRU(probe_cache)
        self.classes = [c for c in rows.distinct("label") if c]

    # -- bookkeeping ---------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.rows)

    def set_epoch(self, epoch: int) -> None:
        """Change the random draws from one epoch to the next (call before each epoch)."""
        self.epoch = epoch

    @property
    def num_failures(self) -> int:
        """Samples that failed to decode so far (in this process)."""
        return self._failures.failed

    @property
    def labels(self) -> List[int]:
        return self.rows.column("label_index").tolist()

    def __getstate__(self) -> Dict[str, Any]:
        # Probe results stay with the process that made them (a pickled dataset stays small).
        state = self.__dict__.copy()
        state["_probes"] = _LRU(self._probes.size)
        return state

    def _generator(self, index: int, attempt: int) -> torch.Generator:
        g = torch.Generator()
        # Mixing constants keep (seed, epoch, index, attempt) tuples from colliding.
        g.manual_seed((self.seed * 1_000_003 + self.epoch * 7_919 + index * 104_729 + attempt) % (2**63 - 1))
        return g

    def _probe(self, index: int, row: ManifestRow) -> Dict[str, Any]:
        start, _ = row.window_in_path()
        if row.duration is not None and row.fps is not None and row.has_audio is not None and start is None:
            # Prepared rows carry their probe; their files start at time 0.
            info = {"duration": row.duration, "fps": row.fps, "has_audio": row.has_audio, "start_time": 0.0}
            if row.source and row.source != row.path and row.width and row.height:
                # A video avssl prep wrote: upright, square pixels, and probed after it was written.
                info.update(coded_width=row.width, coded_height=row.height, rotation=0,
                            sample_aspect_ratio=1.0, decord_risk=None)
                return info
        else:
            info = None
        probes = self._probes
        cached = probes.get(index)
        if cached is None:
            # A source indexed in place: how its frames turn upright, and whether decord may open it,
            # comes from a quick look at its header (or a full probe when the row says nothing).
            cached = {**info, **geometry_info(row.path)} if info is not None else probe(row.path)
            probes.put(index, cached)
        return cached

    def _reader(self, index: int, row: ManifestRow, info: Dict[str, Any], origin: float) -> MediaReader:
        """A reader of this row's video and of its audio file, when it has one."""
        audio_path = row.audio_path if self.audio else None
        if audio_path is not None and not os.path.isfile(audio_path):
            if index not in self._no_audio_file:
                self._no_audio_file.add(index)
                log.warning("audio file %s of %s is missing; reading the video's own audio track", audio_path,
                            row.path)
            audio_path = None
        return MediaReader(row.path, info=info, backend=self.backend, audio_path=audio_path, audio_origin=origin)

    # -- items ---------------------------------------------------------------------------------
    def __getitem__(self, index: int) -> Dict[str, Any]:
        n = len(self.rows)
        attempt = 0
        current = index
        while True:
            self._failures.tried += 1
            try:
                if current in self._bad:
                    raise DecodeError(self.rows[current].path, "failed before")
                item = self._load(current, self._generator(index, attempt))
                item["index"] = current
                return item
            except DecodeError as e:
                if current not in self._bad:
                    self._bad.add(current)
                    log.warning("skipping unreadable sample %d (%s): %s", current, e.path, e.reason)
                self._failures.failed += 1
                f = self._failures
                if len(self._bad) >= n or (
                    f.failed >= self.min_failures_before_stop and f.failed > self.max_failure_fraction * f.tried
                ):
                    raise TooManyDecodeErrors(
                        f"{len(self._bad)} unreadable videos; {f.failed} of {f.tried} samples tried failed "
                        f"(more than max_failure_fraction={self.max_failure_fraction}). Last: {e}. "
                        "Run `avssl prep --check` on the corpus to list the bad files."
                    ) from None
                attempt += 1
                g = self._generator(index, attempt)
                current = int(torch.randint(n, (1,), generator=g))

    def _window_starts(self, duration: float, g: torch.Generator) -> List[float]:
        if self.sampling == "uniform":
            return list(sampling.uniform_clips(duration, self.clip_duration, self.num_clips))
        return [float(sampling.random_clip(duration, self.clip_duration, g)) for _ in range(self.num_clips)]

    def clip_windows(self, index: int) -> List[Tuple[float, float, np.ndarray]]:
        """The windows item ``index`` reads at the current epoch (when its file decodes): one
        ``(start, duration, frame sample times)`` per view, in seconds of the file (from its first frame)."""
        row = self.rows[index]
        return self._windows(row, self._probe(index, row), self._generator(index, 0))[0]

    def _windows(self, row: ManifestRow, info: Dict[str, Any], g: torch.Generator) -> Tuple[List[Any], float, float]:
        """``(windows, offset, duration)``: each view's ``(start, duration, times)``, drawn from ``g``, inside the
        part of the file the row stands for, which starts at ``offset`` and lasts ``duration`` seconds."""
        # A row may stand for a window of an untrimmed file (Kinetics CSV times); clips stay inside it.
        w_start, w_end = row.window_in_path()
        offset = float(w_start or 0.0)
        total = float(info["duration"])
        duration = total - offset
        if w_end is not None:
            duration = min(duration, float(w_end) - offset)
        windows = [window_times(s + offset, self.clip_duration, self.num_frames, total)
                   for s in self._window_starts(duration, g)]
        return windows, offset, duration

    def _load(self, index: int, g: torch.Generator) -> Dict[str, Any]:
        row = self.rows[index]
        info = self._probe(index, row)
        windows, offset, duration = self._windows(row, info, g)
        has_audio = bool(info.get("has_audio")) and self.audio
        with self._reader(index, row, info, offset) as reader:
            # Every view's frames in one read: each frame is decoded once, in order.
            frames, _ = reader.frames(np.concatenate([times for _, _, times in windows]))
            item = self._views(reader, windows, frames, offset, duration, has_audio, g)
        item["label"] = int(row.label_index if row.label_index is not None else -1)
        return item

    def _views(self, reader: MediaReader, windows: List[Any], frames: np.ndarray, offset: float, duration: float,
               has_audio: bool, g: torch.Generator) -> Dict[str, Any]:
        """Transform each window's frames (and read and transform its sound) into the item's views."""
        videos: List[torch.Tensor] = []
        audios: List[torch.Tensor] = []
        in_sync: List[bool] = []
        starts: List[float] = []
        for k, (start, _, _) in enumerate(windows):
            a_start = None
            synced = True
            if has_audio:
                centre = start - offset + self.clip_duration / 2
                a_start = max(0.0, centre - self.audio_duration / 2)
                if self.max_av_offset > 0:
                    synced = bool(torch.rand((), generator=g) >= self.av_offset_prob)
                    a_start, _ = sampling.av_offset(
                        a_start, self.audio_duration, duration, self.max_av_offset, in_sync=synced, generator=g
                    )
                a_start += offset
            clip = torch.from_numpy(np.ascontiguousarray(frames[k * self.num_frames : (k + 1) * self.num_frames]))
            view = self.video_transform(clip, generator=g) if self._video_g else self.video_transform(clip)
            views = list(view) if isinstance(view, (list, tuple)) else [view]
            videos.extend(views)
            starts.extend([start - offset] * len(views))
            if self.audio:
                wave = reader.audio(a_start, self.audio_duration, self.audio_rate) if has_audio else None
                if wave is None:
                    wave = torch.zeros(1, int(round(self.audio_duration * self.audio_rate)))
                if self.audio_transform is None:
                    spec = wave
                elif self._audio_g:
                    spec = self.audio_transform(wave, generator=g)
                else:
                    spec = self.audio_transform(wave)
                audios.extend([spec] * len(views))
                in_sync.extend([synced] * len(views))
        item: Dict[str, Any] = {
            "video": videos[0] if len(videos) == 1 else torch.stack(videos),
            "start": starts[0] if len(starts) == 1 else torch.tensor(starts, dtype=torch.float64),
        }
        if self.audio:
            item["audio"] = audios[0] if len(audios) == 1 else torch.stack(audios)
            item["has_audio"] = has_audio
            if self.max_av_offset > 0:
                item["av_in_sync"] = torch.tensor(in_sync if len(in_sync) > 1 else in_sync[0])
        return item


__all__ = ["VideoDataset", "TooManyDecodeErrors"]
