"""Manifests and the corpus descriptions users bring.

A *manifest* is a CSV with one :class:`ManifestRow` per video (written by ``avssl prep``). The readers
below turn the other usual descriptions into the same rows, with the fields that need probing left
``None``:

* :func:`scan_folder` — folder-per-class trees: ``{class}/*.mp4`` or ``{split}/{class}/*.mp4``;
* :func:`read_kinetics_csv` — Kinetics annotation CSVs (``label,youtube_id,time_start,time_end,split``);
* :func:`read_ucf_hmdb_splits` — UCF-101 ``trainlistNN``/``testlistNN`` files and HMDB-51
  ``{class}_test_splitN.txt`` files.

Rows in memory always hold absolute paths; :func:`write_manifest` stores paths relative to the
manifest's folder where the file lies under it, and :func:`read_manifest` resolves them back, so a
prepared corpus can be moved as a whole.
"""
from __future__ import annotations

import csv
import io
import logging
import os
import re
from dataclasses import asdict, dataclass, fields
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

from avssl.errors import UserError
from avssl.utils import atomic_write_text

log = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]
ClassIndex = Union[None, PathLike, Mapping[str, int], Sequence[str]]

#: File extensions taken as videos by the folder and annotation readers (lower case, with the dot).
VIDEO_EXTENSIONS: Tuple[str, ...] = (".mp4", ".webm", ".mkv", ".avi", ".mov")


@dataclass
class ManifestRow:
    """One video of a corpus.

    Attributes:
        path: the video file (absolute in memory; relative to the manifest's folder on disk when
            it lies under it).
        label: class name, or ``""`` when unlabelled.
        label_index: class index (0-based), −1 when unlabelled.
        split: ``train``/``val``/``test``/… or ``""``.
        duration, fps, width, height, num_frames, has_audio, audio_rate: probed metadata of ``path``
            (``None`` until probed).
        audio_path: the extracted audio file of a prepared corpus, if any.
        source: the original file this row was made from (equal to ``path`` for unprepared rows).
        start, end: the window of ``source`` (seconds) the row stands for, if any. For a prepared row
            ``path`` already holds just that window (see :meth:`window_in_path`).
    """

    path: str
    label: str = ""
    label_index: int = -1
    split: str = ""
    duration: Optional[float] = None
    fps: Optional[float] = None
    width: Optional[int] = None
    height: Optional[int] = None
    num_frames: Optional[int] = None
    has_audio: Optional[bool] = None
    audio_rate: Optional[int] = None
    audio_path: Optional[str] = None
    source: Optional[str] = None
    start: Optional[float] = None
    end: Optional[float] = None

    def window_in_path(self) -> Tuple[Optional[float], Optional[float]]:
        """The ``(start, end)`` window to read from :attr:`path`.

        ``(start, end)`` when ``path`` is the original file (an unprepared row pointing into an
        untrimmed video); ``(None, None)`` when ``path`` is a prepared copy that already holds only
        the window.
        """
        if self.source and os.path.normpath(os.path.abspath(self.source)) != os.path.normpath(
            os.path.abspath(self.path)
        ):
            return None, None
        return self.start, self.end

    def to_dict(self) -> Dict[str, object]:
        return asdict(self)


#: Manifest columns, in file order.
COLUMNS: Tuple[str, ...] = tuple(f.name for f in fields(ManifestRow))
_INT_COLUMNS = {"label_index", "width", "height", "num_frames", "audio_rate"}
_FLOAT_COLUMNS = {"duration", "fps", "start", "end"}
_BOOL_COLUMNS = {"has_audio"}
_PATH_COLUMNS = ("path", "audio_path", "source")
_TRUE = {"1", "true", "yes", "y", "t"}
_FALSE = {"0", "false", "no", "n", "f"}


class ManifestError(UserError, ValueError):
    """A manifest or annotation file is malformed; the message names the file and line."""

    def __init__(self, path: PathLike, line: Optional[int], reason: str) -> None:
        self.path = os.fspath(path)
        self.line = line
        self.reason = reason
        where = f"{self.path}:{line}" if line is not None else self.path
        super().__init__(f"{where}: {reason}")


@dataclass
class MissingEntry:
    """An annotation line whose video was not found."""

    annotation: str  # the CSV / split file
    line: int
    name: str  # youtube id or relative video path
    reason: str


class Rows(list):
    """``list[ManifestRow]`` that also carries the annotation lines whose video is missing.

    Attributes:
        missing: one :class:`MissingEntry` per line skipped because its file was not found.
    """

    def __init__(self, rows: Iterable[ManifestRow] = (), missing: Optional[List[MissingEntry]] = None) -> None:
        super().__init__(rows)
        self.missing: List[MissingEntry] = list(missing or [])


# ---------------------------------------------------------------------------------------------
# writing and reading manifests
# ---------------------------------------------------------------------------------------------
def _to_cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)  # round-trips exactly
    return str(value)


def _relative(path: Optional[str], base: str) -> Optional[str]:
    if not path:
        return path
    full = os.path.abspath(path)
    rel = os.path.relpath(full, base)
    # Only files under the manifest's folder become relative: "../" paths break when it moves.
    if rel == os.pardir or rel.startswith(os.pardir + os.sep) or os.path.isabs(rel):
        return full
    return rel.replace(os.sep, "/")


def write_manifest(rows: Iterable[Union[ManifestRow, Mapping[str, object]]], path: PathLike) -> None:
    """Write ``rows`` as a CSV manifest at ``path``, atomically (temporary file + ``os.replace``).

    ``path``, ``audio_path`` and ``source`` are stored relative to the manifest's folder when the file
    lies under it, absolute otherwise.
    """
    path = os.fspath(path)
    base = os.path.dirname(os.path.abspath(path))
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(COLUMNS)
    for row in rows:
        if not isinstance(row, ManifestRow):
            row = ManifestRow(**dict(row))
        values = asdict(row)
        for col in _PATH_COLUMNS:
            values[col] = _relative(values[col], base)
        writer.writerow([_to_cell(values[c]) for c in COLUMNS])
    atomic_write_text(path, buf.getvalue())


def _parse_cell(col: str, text: str, path: str, line: int) -> object:
    text = text.strip()
    if col in _INT_COLUMNS:
        if text == "":
            return -1 if col == "label_index" else None
        try:
            return int(float(text)) if col != "label_index" else int(text)
        except ValueError:
            raise ManifestError(path, line, f"column {col!r}: {text!r} is not an integer") from None
    if col in _FLOAT_COLUMNS:
        if text == "":
            return None
        try:
            return float(text)
        except ValueError:
            raise ManifestError(path, line, f"column {col!r}: {text!r} is not a number") from None
    if col in _BOOL_COLUMNS:
        if text == "":
            return None
        low = text.lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        raise ManifestError(path, line, f"column {col!r}: {text!r} is not true/false")
    if col in ("audio_path", "source"):
        return text or None
    return text


def read_manifest(path: PathLike) -> List[ManifestRow]:
    """Read a manifest written by :func:`write_manifest` (or by hand).

    Only the ``path`` column is required; missing columns take their defaults and unknown columns are
    ignored. When there is a ``label`` column but no ``label_index``, indices follow the sorted class
    names. Relative paths are resolved against the manifest's folder. A ``nan`` number reads as missing.

    A list of row objects; :func:`avssl.data.manifest_table.read_manifest_table` reads the same file into
    columns, for large corpora.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ManifestError: a missing ``path`` column, or a malformed row (the message names file and line).
    """
    from avssl.data.manifest_table import ManifestTable

    return ManifestTable.read_csv(path).to_rows()


# ---------------------------------------------------------------------------------------------
# class indices
# ---------------------------------------------------------------------------------------------
def load_class_index(path: PathLike) -> Dict[str, int]:
    """Read a class list into ``{class name: 0-based index}``.

    Two forms: numbered lines ``<n> <name>`` (UCF-101's ``classInd.txt``; 1-based numbers become
    0-based, a list whose smallest number is 0 is taken as 0-based), or one name per line (index =
    line order). Blank lines are skipped.
    """
    path = os.fspath(path)
    with open(path, encoding="utf-8") as f:
        lines = [(i + 1, ln.strip()) for i, ln in enumerate(f) if ln.strip()]
    if not lines:
        raise ManifestError(path, None, "empty class index")
    numbered = all(len(ln.split(maxsplit=1)) == 2 and ln.split(maxsplit=1)[0].isdigit() for _, ln in lines)
    out: Dict[str, int] = {}
    if numbered:
        pairs = [(int(ln.split(maxsplit=1)[0]), ln.split(maxsplit=1)[1].strip(), no) for no, ln in lines]
        base = 0 if min(n for n, _, _ in pairs) == 0 else 1
        for n, name, no in pairs:
            if name in out:
                raise ManifestError(path, no, f"class {name!r} listed twice")
            out[name] = n - base
    else:
        for k, (no, name) in enumerate(lines):
            if name in out:
                raise ManifestError(path, no, f"class {name!r} listed twice")
            out[name] = k
    return out


def _index_classes(labels: Iterable[str], class_index: ClassIndex, where: str) -> Dict[str, int]:
    """Map class names to indices: sorted names, or the given index (checked to cover ``labels``)."""
    labels = set(labels)
    if class_index is None:
        return {name: i for i, name in enumerate(sorted(labels))}
    if isinstance(class_index, (str, os.PathLike)):
        index = load_class_index(class_index)
        origin = os.fspath(class_index)
    elif isinstance(class_index, Mapping):
        index, origin = {str(k): int(v) for k, v in class_index.items()}, "the given class index"
    else:
        index, origin = {str(name): i for i, name in enumerate(class_index)}, "the given class list"
    unknown = sorted(labels - set(index))
    if unknown:
        shown = ", ".join(repr(u) for u in unknown[:5]) + (" …" if len(unknown) > 5 else "")
        raise ValueError(f"{where}: classes not in {origin}: {shown}")
    return index


def _is_hidden(name: str) -> bool:
    # Dot-files include the partial outputs of an interrupted ``avssl prep``.
    return name.startswith(".")


def _is_video(name: str, extensions: Sequence[str]) -> bool:
    return os.path.splitext(name)[1].lower() in extensions and not _is_hidden(name)


# ---------------------------------------------------------------------------------------------
# folder trees
# ---------------------------------------------------------------------------------------------
def scan_folder(
    root: PathLike, class_index: ClassIndex = None, extensions: Sequence[str] = VIDEO_EXTENSIONS
) -> List[ManifestRow]:
    """Rows for every video under a folder-per-class tree.

    The layout is read per file from its depth below ``root``: ``root/x.mp4`` is unlabelled,
    ``root/{class}/x.mp4`` has a class, and ``root/{split}/{class}/x.mp4`` (Kinetics style, or
    deeper: ``root/{split}/…/{class}/x.mp4``) has a split and a class. Hidden files and folders are
    skipped. Class indices follow the sorted class names unless ``class_index`` (a class-list file,
    a ``{name: index}`` mapping or a list of names) is given.

    Returns rows sorted by path, with absolute paths.
    """
    root = os.path.abspath(os.fspath(root))
    if not os.path.isdir(root):
        raise NotADirectoryError(f"not a folder: {root}")
    exts = tuple(e.lower() for e in extensions)
    found: List[Tuple[str, str, str]] = []  # (path, label, split)
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not _is_hidden(d))
        rel_dir = os.path.relpath(dirpath, root)
        parts = [] if rel_dir == os.curdir else rel_dir.split(os.sep)
        for name in sorted(filenames):
            if not _is_video(name, exts):
                continue
            if not parts:
                label, split = "", ""
            elif len(parts) == 1:
                label, split = parts[0], ""
            else:
                label, split = parts[-1], parts[0]
            found.append((os.path.join(dirpath, name), label, split))
    index = _index_classes((lab for _, lab, _ in found if lab), class_index, root)
    rows = [
        ManifestRow(path=p, label=lab, label_index=index[lab] if lab else -1, split=sp, source=p)
        for p, lab, sp in found
    ]
    rows.sort(key=lambda r: r.path)
    return rows


# ---------------------------------------------------------------------------------------------
# Kinetics
# ---------------------------------------------------------------------------------------------
def _index_videos(root: str, extensions: Sequence[str]) -> Dict[str, List[str]]:
    """``{file stem: [paths relative to root]}`` for every video under ``root`` (one walk)."""
    out: Dict[str, List[str]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not _is_hidden(d))
        rel_dir = os.path.relpath(dirpath, root)
        for name in sorted(filenames):
            if _is_video(name, extensions):
                rel = name if rel_dir == os.curdir else os.path.join(rel_dir, name)
                out.setdefault(os.path.splitext(name)[0], []).append(rel)
    return out


def kinetics_name(youtube_id: str, time_start: float, time_end: float) -> str:
    """The file stem Kinetics downloaders use for a trimmed clip: ``{id}_{start:06d}_{end:06d}``."""
    return f"{youtube_id}_{int(round(time_start)):06d}_{int(round(time_end)):06d}"


def read_kinetics_csv(
    csv_path: PathLike,
    video_root: PathLike,
    class_index: ClassIndex = None,
    extensions: Sequence[str] = VIDEO_EXTENSIONS,
) -> Rows:
    """Rows for a Kinetics annotation CSV (``label,youtube_id,time_start,time_end,split``).

    A clip is looked for as ``{youtube_id}_{start:06d}_{end:06d}.<ext>`` (an already trimmed clip:
    the row gets no window) and then as ``{youtube_id}.<ext>`` (the full video: the row's
    ``start``/``end`` are the CSV's ``time_start``/``time_end``), under ``video_root/{split}/{label}/``,
    ``video_root/{label}/`` (spaces in labels may also be underscores), flat in ``video_root``, or
    anywhere below it. ``label`` and ``split`` columns may be absent (test sets).

    Lines whose video is not found are left out and listed in the result's ``missing`` attribute
    (a warning gives their number). Class indices follow the sorted labels of the whole CSV, so they do
    not depend on which files are present, unless ``class_index`` is given.

    Raises:
        ManifestError: a missing required column or an unparsable time (names file and line).
    """
    csv_path = os.fspath(csv_path)
    root = os.path.abspath(os.fspath(video_root))
    if not os.path.isfile(csv_path):
        raise FileNotFoundError(f"Kinetics CSV not found: {csv_path}")
    if not os.path.isdir(root):
        raise NotADirectoryError(f"video root not found: {root}")
    entries: List[Tuple[int, str, str, float, float, str]] = []
    with open(csv_path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        header = [h.strip() for h in (reader.fieldnames or [])]
        need = ("youtube_id", "time_start", "time_end")
        absent = [c for c in need if c not in header]
        if absent:
            raise ManifestError(
                csv_path, 1, f"missing column(s) {absent}; a Kinetics CSV has label,youtube_id,time_start,time_end,split"
            )
        reader.fieldnames = header
        for rec in reader:
            line = reader.line_num
            if rec.get(None):
                raise ManifestError(csv_path, line, f"more fields than the header's {len(header)}")
            yid = (rec.get("youtube_id") or "").strip()
            if not yid:
                raise ManifestError(csv_path, line, "empty youtube_id")
            try:
                t0, t1 = float(rec["time_start"]), float(rec["time_end"])
            except (TypeError, ValueError):
                raise ManifestError(
                    csv_path, line, f"time_start/time_end must be numbers, got {rec.get('time_start')!r}, {rec.get('time_end')!r}"
                ) from None
            if t1 <= t0:
                raise ManifestError(csv_path, line, f"time_end ({t1}) must be after time_start ({t0})")
            entries.append((line, (rec.get("label") or "").strip(), yid, t0, t1, (rec.get("split") or "").strip()))

    index = _index_classes((e[1] for e in entries if e[1]), class_index, csv_path)
    videos = _index_videos(root, tuple(e.lower() for e in extensions))
    rows = Rows()
    for line, label, yid, t0, t1, split in entries:
        preferred = []
        for lab in dict.fromkeys([label, label.replace(" ", "_")]):
            if split and lab:
                preferred.append(os.path.join(split, lab))
            if lab:
                preferred.append(lab)
        preferred.append("")
        chosen: Optional[str] = None
        window: Tuple[Optional[float], Optional[float]] = (None, None)
        for stem, win in ((kinetics_name(yid, t0, t1), (None, None)), (yid, (t0, t1))):
            candidates = videos.get(stem)
            if not candidates:
                continue
            by_dir = {os.path.dirname(c): c for c in reversed(candidates)}
            chosen = next((by_dir[d] for d in preferred if d in by_dir), candidates[0])
            window = win
            break
        if chosen is None:
            rows.missing.append(
                MissingEntry(csv_path, line, yid, f"no {kinetics_name(yid, t0, t1)}.* or {yid}.* under {root}")
            )
            continue
        full = os.path.join(root, chosen)
        rows.append(
            ManifestRow(
                path=full,
                label=label,
                label_index=index[label] if label else -1,
                split=split,
                source=full,
                start=window[0],
                end=window[1],
            )
        )
    if rows.missing:
        log.warning("%s: %d of %d videos not found under %s", csv_path, len(rows.missing), len(entries), root)
    return rows


# ---------------------------------------------------------------------------------------------
# UCF-101 / HMDB-51
# ---------------------------------------------------------------------------------------------
_UCF_RE = re.compile(r"^(train|test)list(\d+)\.txt$", re.IGNORECASE)
_HMDB_RE = re.compile(r"^(.+)_test_split(\d+)\.txt$", re.IGNORECASE)
_HMDB_SPLITS = {"1": "train", "2": "test"}  # "0": not used in this split


class _Finder:
    """Finds ``{dir}/{stem}.<ext>`` for any video extension, listing each folder once."""

    def __init__(self, root: str, extensions: Sequence[str]) -> None:
        self.root = root
        self.extensions = extensions
        self._listing: Dict[str, Dict[str, str]] = {}

    def _stems(self, rel_dir: str) -> Dict[str, str]:
        if rel_dir not in self._listing:
            folder = os.path.join(self.root, rel_dir)
            names = sorted(os.listdir(folder)) if os.path.isdir(folder) else []
            stems: Dict[str, str] = {}
            for n in names:
                if _is_video(n, self.extensions):
                    stems.setdefault(os.path.splitext(n)[0], n)
            self._listing[rel_dir] = stems
        return self._listing[rel_dir]

    def find(self, rel: str, dirs: Sequence[str]) -> Optional[str]:
        """Exact ``dir/rel`` first, then the same stem with another video extension."""
        name = os.path.basename(rel)
        for d in dirs:
            exact = os.path.join(self.root, d, name)
            if os.path.isfile(exact):
                return exact
        stem = os.path.splitext(name)[0]
        for d in dirs:
            hit = self._stems(d).get(stem)
            if hit:
                return os.path.join(self.root, d, hit)
        return None


def _split_files(path: str, fold: int) -> Tuple[str, List[str]]:
    """Which kind of split files (``"ucf"``/``"hmdb"``) and which files to read for ``path``."""
    if os.path.isdir(path):
        names = sorted(os.listdir(path))
        ucf = [n for n in names if (m := _UCF_RE.match(n)) and int(m.group(2)) == fold]
        if ucf:
            return "ucf", [os.path.join(path, n) for n in ucf]
        hmdb = [n for n in names if (m := _HMDB_RE.match(n)) and int(m.group(2)) == fold]
        if hmdb:
            return "hmdb", [os.path.join(path, n) for n in hmdb]
        raise FileNotFoundError(
            f"no UCF-101 (trainlist{fold:02d}.txt/testlist{fold:02d}.txt) or HMDB-51 (*_test_split{fold}.txt) "
            f"split files in {path}"
        )
    if not os.path.isfile(path):
        raise FileNotFoundError(f"split file not found: {path}")
    name = os.path.basename(path)
    if _UCF_RE.match(name):
        return "ucf", [path]
    if _HMDB_RE.match(name):
        return "hmdb", [path]
    raise ValueError(
        f"{path}: not a UCF-101 (trainlistNN.txt/testlistNN.txt) or HMDB-51 ({{class}}_test_splitN.txt) split file"
    )


def fold_path(path: PathLike, fold: int) -> str:
    """The official split ``fold``'s counterpart of a UCF-101/HMDB-51 split file (``trainlist01.txt`` ->
    ``trainlist03.txt``, ``brush_hair_test_split1.txt`` -> ``brush_hair_test_split3.txt``), or a folder of split
    files itself, once it is checked to hold that split's files.

    Raises FileNotFoundError when the file or the folder's files of split ``fold`` do not exist, ValueError when
    ``path`` is not a split file."""
    path = os.fspath(path)
    if os.path.isdir(path):
        _split_files(path, fold)
        return path
    folder, name = os.path.split(path)
    ucf, hmdb = _UCF_RE.match(name), _HMDB_RE.match(name)
    if ucf:
        name = f"{name[:ucf.start(2)]}{fold:0{len(ucf.group(2))}d}{name[ucf.end(2):]}"
    elif hmdb:
        name = f"{name[:hmdb.start(2)]}{fold}{name[hmdb.end(2):]}"
    else:
        raise ValueError(f"{path}: not a UCF-101 (trainlistNN.txt/testlistNN.txt) or HMDB-51 ({{class}}_test_splitN.txt) "
                         "split file, nor a folder of them")
    out = os.path.join(folder, name)
    if not os.path.isfile(out):
        raise FileNotFoundError(f"split file not found: {out} (split {fold} of {path})")
    return out


def _read_lines(path: str) -> List[Tuple[int, List[str]]]:
    with open(path, encoding="utf-8") as f:
        return [(i + 1, ln.split()) for i, ln in enumerate(f) if ln.strip()]


def read_ucf_hmdb_splits(
    split_file: PathLike,
    video_root: PathLike,
    class_index: ClassIndex = None,
    fold: int = 1,
    extensions: Sequence[str] = VIDEO_EXTENSIONS,
) -> Rows:
    """Rows for UCF-101 or HMDB-51 split files.

    ``split_file`` may be

    * a UCF-101 ``trainlistNN.txt`` (lines ``Class/v_x.avi 1``, split ``train``) or ``testlistNN.txt``
      (lines ``Class/v_x.avi``, split ``test``); videos are looked for at ``video_root/Class/v_x.avi``
      or flat in ``video_root``;
    * an HMDB-51 ``{class}_test_splitN.txt`` (lines ``video.avi 0|1|2``: 1 train, 2 test, 0 not used
      and left out); videos at ``video_root/{class}/video.avi`` or flat;
    * a folder holding such files: all files of fold ``fold`` are read (UCF train and test lists, or
      every HMDB class file).

    A video stored with another extension (e.g. ``.mp4`` after ``avssl prep``) is found by its stem.
    Class indices: ``class_index`` when given; otherwise a ``classInd.txt`` next to UCF files; otherwise
    the sorted class names (for HMDB, of every class file of the same fold in the folder, so one
    class file gets the same index as when the whole folder is read).

    Lines whose video is not found are left out and listed in the result's ``missing`` attribute.
    """
    split_path = os.fspath(split_file)
    root = os.path.abspath(os.fspath(video_root))
    exts = tuple(e.lower() for e in extensions)
    kind, files = _split_files(split_path, fold)
    folder = split_path if os.path.isdir(split_path) else os.path.dirname(os.path.abspath(split_path))
    entries: List[Tuple[str, int, str, str, str]] = []  # (file, line, rel video, label, split)
    classes: set = set()
    if kind == "ucf":
        for fp in files:
            split = _UCF_RE.match(os.path.basename(fp)).group(1).lower()
            for line, toks in _read_lines(fp):
                rel = toks[0].replace("\\", "/")
                if "/" not in rel:
                    raise ManifestError(fp, line, f"expected 'Class/video.avi', got {toks[0]!r}")
                label = rel.split("/")[0]
                if split == "train" and len(toks) > 1 and not toks[1].lstrip("-").isdigit():
                    raise ManifestError(fp, line, f"expected a class number after the video, got {toks[1]!r}")
                entries.append((fp, line, rel, label, split))
                classes.add(label)
        if class_index is None and os.path.isfile(os.path.join(folder, "classInd.txt")):
            class_index = os.path.join(folder, "classInd.txt")
    else:
        fold_no = int(_HMDB_RE.match(os.path.basename(files[0])).group(2))
        for fp in files:
            label = _HMDB_RE.match(os.path.basename(fp)).group(1)
            classes.add(label)
            for line, toks in _read_lines(fp):
                if len(toks) != 2 or toks[1] not in ("0", "1", "2"):
                    raise ManifestError(fp, line, f"expected 'video.avi 0|1|2', got {' '.join(toks)!r}")
                if toks[1] in _HMDB_SPLITS:
                    entries.append((fp, line, f"{label}/{toks[0]}", label, _HMDB_SPLITS[toks[1]]))
        # Index classes over every class file of this fold so one file alone gets the same indices.
        for n in os.listdir(folder):
            m = _HMDB_RE.match(n)
            if m and int(m.group(2)) == fold_no:
                classes.add(m.group(1))
    index = _index_classes(classes, class_index, split_path)
    finder = _Finder(root, exts)
    rows = Rows()
    for fp, line, rel, label, split in entries:
        parent = os.path.dirname(rel)
        full = finder.find(rel, [parent, ""] if parent else [""])
        if full is None:
            rows.missing.append(MissingEntry(fp, line, rel, f"not found under {root}"))
            continue
        rows.append(ManifestRow(path=full, label=label, label_index=index[label], split=split, source=full))
    if rows.missing:
        log.warning("%s: %d of %d videos not found under %s", split_path, len(rows.missing), len(entries), root)
    return rows


__all__ = [
    "COLUMNS",
    "fold_path",
    "VIDEO_EXTENSIONS",
    "ManifestError",
    "ManifestRow",
    "MissingEntry",
    "Rows",
    "kinetics_name",
    "load_class_index",
    "read_kinetics_csv",
    "read_manifest",
    "read_ucf_hmdb_splits",
    "scan_folder",
    "write_manifest",
]
