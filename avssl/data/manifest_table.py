"""Columnar manifests: a corpus's rows as typed numpy arrays, not one Python object per row.

A list of :class:`~avssl.data.manifest.ManifestRow` costs about 900 bytes per row in every process (1.6 GB
for AudioSet's 1.8M rows), and loader workers forked from the main process copy those objects page by page
as they touch their reference counts. A :class:`ManifestTable` holds each column as numpy arrays instead (no
Python object per row), so it is small (tens of bytes a row), quick to build, and shared by forked workers
without copies:

* numbers are typed arrays (float64, int32, int8), or small codes into their distinct values where those
  are few (frame rates, sizes); a missing value is NaN, or ``MISSING_INT`` (−2³¹) for the integer columns
  that may be missing, or −1 for ``has_audio``;
* ``label`` and ``split`` are small integer codes into their distinct values;
* the three path columns are stored as folder + stem + extension: folders and extensions are codes into
  their distinct values, stems are ids into one offset-encoded byte pool the three columns share (a
  prepared corpus's ``videos/a/x.mp4``, ``audio/a/x.wav`` and source ``/raw/a/x.mp4`` keep one ``x``).

``table[i]`` gives the row as a :class:`ManifestRow` (made on demand), ``table[a:b]`` or
``table.take(indices)`` a smaller table, and :meth:`ManifestTable.column` a whole column as an array.

:meth:`ManifestTable.read_csv` reads a manifest CSV without a Python object per row: regular files (no
quoting, no blank lines, no padded cells: what :func:`~avssl.data.manifest.write_manifest` writes for
ordinary paths) are split and converted in blocks with numpy; anything else goes through the ``csv``
module with the same rules and errors as :func:`~avssl.data.manifest.read_manifest`.
"""
from __future__ import annotations

import csv
import ctypes
import math
import os
from collections.abc import Sequence as _SequenceABC
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from avssl.data.manifest import (
    COLUMNS,
    ManifestError,
    ManifestRow,
    PathLike,
    _BOOL_COLUMNS,
    _FLOAT_COLUMNS,
    _INT_COLUMNS,
    _PATH_COLUMNS,
    _index_classes,
    _parse_cell,
)

#: The missing-value marker of the integer columns that may be missing (``label_index`` is never missing:
#: −1 means unlabelled).
MISSING_INT = np.iinfo(np.int32).min
_STR_COLUMNS = ("label", "split")
_DTYPES = {**{c: np.float64 for c in _FLOAT_COLUMNS}, **{c: np.int32 for c in _INT_COLUMNS},
           **{c: np.int8 for c in _BOOL_COLUMNS}}
#: Bytes of CSV converted at a time by the block reader (bounds its working memory).
_BLOCK = 8 << 20
_MISSING = {**{c: math.nan for c in _FLOAT_COLUMNS}, **{c: MISSING_INT for c in _INT_COLUMNS},
            "label_index": -1, **{c: -1 for c in _BOOL_COLUMNS}}
_INT_LIMIT = 2**31 - 1  # integer cells at or beyond this are refused (int32 columns, MISSING_INT reserved)
_POW10 = np.array([float(10**k) for k in range(16)])  # exact in float64


def _small(codes: np.ndarray, count: int) -> np.ndarray:
    """``codes`` in the smallest unsigned type that holds ``count`` distinct values."""
    for dtype in (np.uint8, np.uint16, np.uint32):
        if count <= np.iinfo(dtype).max + 1:
            return codes.astype(dtype, copy=False)
    return codes.astype(np.int64, copy=False)


class _Interned:
    """A column of few distinct values (strings or None): ``values[codes[i]]``."""

    __slots__ = ("codes", "values")

    def __init__(self, codes: np.ndarray, values: Sequence[Optional[str]]) -> None:
        self.codes = _small(np.asarray(codes), len(values))
        self.values: Tuple[Optional[str], ...] = tuple(values)

    def __getitem__(self, i: int) -> Optional[str]:
        return self.values[self.codes[i]]

    def take(self, idx: np.ndarray) -> "_Interned":
        return _Interned(self.codes[idx], self.values)

    def code_of(self, value: Optional[str]) -> int:
        """The code of ``value``, or −1 when no row has it."""
        try:
            return self.values.index(value)
        except ValueError:
            return -1

    @property
    def nbytes(self) -> int:
        return self.codes.nbytes + sum(len(v or "") for v in self.values)


class _Interner:
    """Builds an :class:`_Interned` column: distinct values get codes in order of first appearance."""

    def __init__(self) -> None:
        self.index: Dict[Any, int] = {}
        self.values: List[Optional[str]] = []
        self.parts: List[np.ndarray] = []

    def code(self, value: Optional[str]) -> int:
        code = self.index.get(value)
        if code is None:
            code = self.index[value] = len(self.values)
            self.values.append(value)
        return code

    def add_codes(self, codes: np.ndarray) -> None:
        # Narrow as they come: a block's codes and the whole column must not be held wide at once.
        self.parts.append(_small(np.asarray(codes), len(self.values)))

    def add(self, values: Iterable[Optional[str]]) -> None:
        self.add_codes(np.fromiter((self.code(v) for v in values), np.int64))

    def finish(self) -> _Interned:
        parts, self.parts = self.parts, []
        codes = np.concatenate(parts) if parts else np.zeros(0, np.int64)
        del parts
        return _Interned(codes, self.values)


class _Names:
    """Byte strings, offset-encoded: name ``k`` is ``data[offsets[k]:offsets[k + 1]]`` (UTF-8)."""

    __slots__ = ("offsets", "data")

    def __init__(self, offsets: np.ndarray, data: np.ndarray) -> None:
        self.offsets, self.data = offsets, data

    def __getitem__(self, k: int) -> str:
        return self.data[self.offsets[k] : self.offsets[k + 1]].tobytes().decode("utf-8")

    @property
    def nbytes(self) -> int:
        return self.offsets.nbytes + self.data.nbytes


class _NamePool:
    """Builds :class:`_Names`, handing out ids in order."""

    def __init__(self) -> None:
        self.chunks: List[np.ndarray] = []
        self.lengths: List[np.ndarray] = []
        self.count = 0

    def add_bytes(self, data: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        """Append names given as their concatenated bytes and lengths; returns their ids."""
        self.chunks.append(np.asarray(data, np.uint8))
        self.lengths.append(np.asarray(lengths, np.int32))
        ids = np.arange(self.count, self.count + len(lengths), dtype=np.int64)
        self.count += len(lengths)
        return ids

    def add(self, names: Sequence[str]) -> np.ndarray:
        encoded = [n.encode("utf-8") for n in names]
        return self.add_bytes(np.frombuffer(b"".join(encoded), np.uint8),
                              np.fromiter((len(e) for e in encoded), np.int64, len(encoded)))

    def finish(self) -> _Names:
        parts, self.lengths = self.lengths, []
        lengths = np.concatenate(parts) if parts else np.zeros(0, np.int64)
        del parts
        offsets = np.zeros(len(lengths) + 1, np.int64)
        np.cumsum(lengths, out=offsets[1:])
        del lengths
        chunks, self.chunks = self.chunks, []
        data = np.concatenate(chunks) if chunks else np.zeros(0, np.uint8)
        del chunks
        if offsets[-1] < np.iinfo(np.uint32).max:
            offsets = offsets.astype(np.uint32)
        return _Names(offsets, data)


class _PathColumn:
    """Paths (or None) as folder + stem + extension: ``dirs[i] + names[stems[i]] + exts[i]``.

    Folders end with ``/`` (or are empty for a bare file name); None marks a missing path.
    """

    __slots__ = ("dirs", "stems", "exts")

    def __init__(self, dirs: _Interned, stems: np.ndarray, exts: _Interned) -> None:
        self.dirs, self.exts = dirs, exts
        self.stems = stems if stems.dtype == np.uint32 else stems.astype(np.uint32)

    def get(self, i: int, names: _Names) -> Optional[str]:
        folder = self.dirs[i]
        if folder is None:
            return None
        return folder + names[int(self.stems[i])] + (self.exts[i] or "")

    def take(self, idx: np.ndarray) -> "_PathColumn":
        return _PathColumn(self.dirs.take(idx), self.stems[idx], self.exts.take(idx))

    @property
    def nbytes(self) -> int:
        return self.dirs.nbytes + self.stems.nbytes + self.exts.nbytes


def _split_path(path: str) -> Tuple[str, str, str]:
    """``(folder with its trailing '/', stem, extension)``, which concatenate back to ``path``."""
    cut = path.rfind("/") + 1
    stem, ext = os.path.splitext(path[cut:])
    return path[:cut], stem, ext


def _path_columns(values: Dict[str, Sequence[Optional[str]]], pool: _NamePool) -> Dict[str, _PathColumn]:
    """Encode Python path columns; a stem equal to the row's ``path`` stem is stored once."""
    out: Dict[str, _PathColumn] = {}
    path_stems: Optional[np.ndarray] = None
    own: List[str] = []
    for col in _PATH_COLUMNS:
        dirs, exts = _Interner(), _Interner()
        parts = [(None, "", None) if v is None else _split_path(v) for v in values[col]]
        dirs.add(p[0] for p in parts)
        exts.add(p[2] for p in parts)
        if path_stems is None:
            own = [p[1] for p in parts]
            stems = pool.add(own)
            path_stems = stems
        else:
            same = np.fromiter((p[0] is None or p[1] == own[i] for i, p in enumerate(parts)), bool, len(parts))
            stems = path_stems.copy()
            if not same.all():
                other = np.flatnonzero(~same)
                stems[other] = pool.add([parts[i][1] for i in other])
            else:
                stems = path_stems  # one array shared by the columns (and pickled once)
        out[col] = _PathColumn(dirs.finish(), stems, exts.finish())
    return out


def _numeric(col: str, values: Sequence[Any]) -> np.ndarray:
    """A Python column (None for missing) as its typed array with missing-value markers."""
    if col in _FLOAT_COLUMNS:
        return np.fromiter((math.nan if v is None else v for v in values), np.float64, len(values))
    if col in _BOOL_COLUMNS:
        return np.fromiter((-1 if v is None else int(bool(v)) for v in values), np.int8, len(values))
    missing = -1 if col == "label_index" else MISSING_INT
    return np.fromiter((missing if v is None else v for v in values), np.int32, len(values))


class _Numbers:
    """A number column: its values, or (when few are distinct) codes into a table of the distinct values.

    Distinct means distinct bits, so ``-0.0`` and ``0.0`` stay apart and every value reads back exactly.
    """

    __slots__ = ("values", "codes")

    def __init__(self, values: np.ndarray, codes: Optional[np.ndarray] = None) -> None:
        self.values, self.codes = values, codes

    @classmethod
    def of(cls, array: np.ndarray) -> "_Numbers":
        """``array``, coded when that is smaller (up to 65536 distinct values)."""
        n = len(array)
        if array.itemsize == 1 or n < 256:
            return cls(array)
        bits = array.view(np.int64 if array.itemsize == 8 else np.int32)
        # The distinct values of a sample usually are all of them (frame rates, sizes, flags, rates).
        table = np.unique(bits[:: max(1, n // 4096)])
        codes = np.minimum(np.searchsorted(table, bits), len(table) - 1)
        if not np.array_equal(table[codes], bits):
            table, codes = np.unique(bits, return_inverse=True)
        if len(table) > 65536 or len(table) * array.itemsize >= n * (array.itemsize - 2):
            return cls(array)
        return cls(table.view(array.dtype), _small(codes.ravel(), len(table)))

    def __getitem__(self, i: int) -> Any:
        return self.values[i] if self.codes is None else self.values[self.codes[i]]

    def take(self, idx: np.ndarray) -> "_Numbers":
        return _Numbers(self.values[idx]) if self.codes is None else _Numbers(self.values, self.codes[idx])

    def array(self) -> np.ndarray:
        return self.values if self.codes is None else self.values[self.codes]

    @property
    def nbytes(self) -> int:
        return self.values.nbytes + (0 if self.codes is None else self.codes.nbytes)


class ManifestTable(_SequenceABC):
    """The rows of a manifest, column by column (see the module's docstring).

    Behaves as a read-only sequence of :class:`ManifestRow`: ``len(t)``, ``t[i]`` (a new row object each
    time: changing it does not change the table), iteration, ``t[a:b]``. Build one with
    :meth:`from_rows` or :meth:`read_csv`.
    """

    def __init__(self, size: int, numbers: Dict[str, Union[np.ndarray, _Numbers]], strings: Dict[str, _Interned],
                 paths: Dict[str, _PathColumn], names: _Names) -> None:
        self._size = int(size)
        self._numbers = {c: v if isinstance(v, _Numbers) else _Numbers.of(v) for c, v in numbers.items()}
        self._strings = strings
        self._paths = paths
        self._names = names

    # -- construction ---------------------------------------------------------------------------
    @classmethod
    def from_rows(cls, rows: Iterable[Union[ManifestRow, Dict[str, Any]]]) -> "ManifestTable":
        """A table holding ``rows`` (ManifestRow objects or dicts of their fields), in order."""
        rows = [r if isinstance(r, ManifestRow) else ManifestRow(**dict(r)) for r in rows]
        columns = {c: [getattr(r, c) for r in rows] for c in COLUMNS}
        return cls._from_columns(len(rows), columns)

    @classmethod
    def _from_columns(cls, size: int, columns: Dict[str, Sequence[Any]]) -> "ManifestTable":
        pool = _NamePool()
        paths = _path_columns({c: columns[c] for c in _PATH_COLUMNS}, pool)
        strings = {}
        for col in _STR_COLUMNS:
            interner = _Interner()
            interner.add(columns[col])
            strings[col] = interner.finish()
        numbers = {c: _numeric(c, columns[c]) for c in _DTYPES}
        return cls(size, numbers, strings, paths, pool.finish())

    @classmethod
    def read_csv(cls, path: PathLike) -> "ManifestTable":
        """Read a manifest CSV; the same rules, results and errors as :func:`~avssl.data.manifest.read_manifest`."""
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"manifest not found: {path}")
        base = os.path.dirname(os.path.abspath(path))
        table, header = _read_blocks(path, base)
        if table is None:
            table, header = _read_with_csv_module(path, base)
        if "label_index" not in header and "label" in header:
            table = table._with_sorted_label_indices(path)
        _return_free_memory()
        return table

    def _with_sorted_label_indices(self, where: str) -> "ManifestTable":
        """Indices that follow the sorted class names (a manifest with labels but no ``label_index``)."""
        labels = self._strings["label"]
        index = _index_classes({v for v in labels.values if v}, None, where)
        lookup = np.array([index[v] if v else -1 for v in labels.values], np.int32)
        numbers = dict(self._numbers, label_index=lookup[labels.codes] if len(labels.values) else
                       np.full(self._size, -1, np.int32))
        return ManifestTable(self._size, numbers, self._strings, self._paths, self._names)

    # -- the sequence ---------------------------------------------------------------------------
    def __len__(self) -> int:
        return self._size

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, slice):
            return self.take(np.arange(self._size)[key])
        if isinstance(key, (int, np.integer)):
            i = int(key)
            if i < 0:
                i += self._size
            if not 0 <= i < self._size:
                raise IndexError(f"row {key} out of range for a manifest of {self._size} rows")
            return self.row(i)
        return self.take(np.asarray(key))

    def __iter__(self) -> Iterator[ManifestRow]:
        for i in range(self._size):
            yield self.row(i)

    def __repr__(self) -> str:
        return f"ManifestTable({self._size} rows, {self.nbytes / 2**20:.1f} MiB)"

    def row(self, i: int) -> ManifestRow:
        """Row ``i`` (0 ≤ i < len) as a new :class:`ManifestRow`."""
        n = self._numbers
        values: Dict[str, Any] = {c: self._paths[c].get(i, self._names) for c in _PATH_COLUMNS}
        values.update({c: self._strings[c][i] for c in _STR_COLUMNS})
        for c in _FLOAT_COLUMNS:
            v = float(n[c][i])
            values[c] = None if math.isnan(v) else v
        for c in _INT_COLUMNS:
            v = int(n[c][i])
            values[c] = None if v == MISSING_INT else v
        h = int(n["has_audio"][i])
        values["has_audio"] = None if h < 0 else bool(h)
        return ManifestRow(**values)

    def take(self, indices: Any) -> "ManifestTable":
        """A table of the rows at ``indices`` (an integer array or a boolean mask), in that order."""
        idx = np.asarray(indices)
        if idx.dtype == bool:
            idx = np.flatnonzero(idx)
        idx = idx.astype(np.int64, copy=False)
        stems_seen: Dict[int, np.ndarray] = {}
        paths = {}
        for c, col in self._paths.items():
            # Columns that shared one stem array still share one after the selection.
            if id(col.stems) not in stems_seen:
                stems_seen[id(col.stems)] = col.stems[idx]
            paths[c] = _PathColumn(col.dirs.take(idx), stems_seen[id(col.stems)], col.exts.take(idx))
        return ManifestTable(len(idx), {c: v.take(idx) for c, v in self._numbers.items()},
                             {c: v.take(idx) for c, v in self._strings.items()}, paths, self._names)

    def to_rows(self) -> List[ManifestRow]:
        return [self.row(i) for i in range(self._size)]

    # -- whole columns --------------------------------------------------------------------------
    def column(self, name: str) -> np.ndarray:
        """Column ``name`` for every row: the typed array of a number column (missing values marked as in
        the module's docstring), or an object array of ``str``/None for the others."""
        if name in self._numbers:
            return self._numbers[name].array()
        if name in self._strings:
            s = self._strings[name]
            return np.array(s.values, dtype=object)[s.codes] if s.values else np.empty(0, object)
        if name in self._paths:
            return np.array([self._paths[name].get(i, self._names) for i in range(self._size)], dtype=object)
        raise KeyError(f"no column {name!r}; columns: {list(COLUMNS)}")

    def where(self, column: str, value: Optional[str]) -> np.ndarray:
        """Boolean mask of the rows whose ``label`` or ``split`` is ``value``."""
        if column not in self._strings:
            raise KeyError(f"where() compares the string columns {list(_STR_COLUMNS)}, not {column!r}")
        code = self._strings[column].code_of(value)
        return self._strings[column].codes == code if code >= 0 else np.zeros(self._size, bool)

    def distinct(self, column: str) -> List[Optional[str]]:
        """The distinct values of ``label`` or ``split`` among the rows, sorted (None and "" included)."""
        s = self._strings[column]
        used = np.unique(s.codes) if self._size else np.zeros(0, np.int64)
        return sorted((s.values[int(c)] for c in used), key=lambda v: (v is None, v or ""))

    @property
    def nbytes(self) -> int:
        """Bytes held by the columns (numpy buffers and the distinct strings)."""
        arrays = {id(p.stems): p.stems.nbytes for p in self._paths.values()}  # shared stem arrays count once
        return (sum(v.nbytes for v in self._numbers.values()) + sum(v.nbytes for v in self._strings.values())
                + sum(p.dirs.nbytes + p.exts.nbytes for p in self._paths.values()) + sum(arrays.values())
                + self._names.nbytes)


def _return_free_memory() -> None:
    """Hand the heap pages freed by reading back to the system: glibc keeps them otherwise, and every loader
    worker forked later would start with the reader's temporary buffers counted in its memory."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to do
        pass


# ---------------------------------------------------------------------------------------------------
# reading CSV with the csv module (any file read_manifest reads)
# ---------------------------------------------------------------------------------------------------
def _header(path: str, first: List[str]) -> List[str]:
    header = [h.strip() for h in first]
    if "path" not in header:
        raise ManifestError(path, 1, f"missing column 'path' (header has {header}; expected columns {list(COLUMNS)})")
    return header


def _read_with_csv_module(path: str, base: str) -> Tuple[ManifestTable, List[str]]:
    """Cell by cell, with read_manifest's rules: blank lines skipped, cells stripped, errors name the line."""
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        try:
            header = _header(path, next(reader))
        except StopIteration:
            raise ManifestError(path, 1, "empty file: expected a header with at least a 'path' column") from None
        except csv.Error as e:
            raise ManifestError(path, reader.line_num, f"malformed CSV ({e})") from None
        known = [(i, h) for i, h in enumerate(header) if h in COLUMNS]
        columns: Dict[str, List[Any]] = {c: [] for c in COLUMNS}
        defaults = {c: v for c, v in ManifestRow(path="").to_dict().items()}
        absent = [c for c in COLUMNS if c not in header]
        size = 0
        while True:
            try:
                cells = next(reader)
            except StopIteration:
                break
            except csv.Error as e:
                raise ManifestError(path, reader.line_num, f"malformed CSV ({e})") from None
            line = reader.line_num
            if not cells or all(not c.strip() for c in cells):
                continue  # blank line
            if len(cells) != len(header):
                raise ManifestError(path, line, f"expected {len(header)} fields (as in the header), found {len(cells)}")
            for i, h in known:
                value = _parse_cell(h, cells[i], path, line)
                if h in _INT_COLUMNS and value is not None and abs(value) >= _INT_LIMIT:
                    raise ManifestError(path, line, f"column {h!r}: {cells[i].strip()!r} is out of range")
                if h in _PATH_COLUMNS and value:
                    value = os.path.normpath(os.path.join(base, str(value)))
                columns[h].append(value)
            if not columns["path"][-1]:
                raise ManifestError(path, line, "empty 'path'")
            size += 1
        for c in absent:
            columns[c] = [defaults[c]] * size
    return ManifestTable._from_columns(size, columns), header


# ---------------------------------------------------------------------------------------------------
# reading CSV in blocks with numpy (regular files)
# ---------------------------------------------------------------------------------------------------
class _Irregular(Exception):
    """The file needs the csv module (quoting, blank lines, padded cells, odd paths, non-UTF-8 ...)."""


def _matrix(buf: np.ndarray, starts: np.ndarray, lengths: np.ndarray, pad: bool = True) -> np.ndarray:
    """Fields ``buf[starts[i]:starts[i] + lengths[i]]`` as the rows of an n×L uint8 matrix, L a multiple of 8,
    zero-padded (with ``pad=False`` the bytes after a field are whatever follows it). ``buf`` (contiguous)
    must extend at least L bytes past every start."""
    width = -(-max(1, int(lengths.max()) if len(lengths) else 1) // 8) * 8
    # Every L-byte window of the buffer as one item: indexing copies whole items, the quickest gather.
    windows = np.ndarray(shape=(len(buf) - width + 1,), dtype=f"V{width}", buffer=buf, strides=(1,))
    m = windows[starts].view(np.uint8).reshape(len(starts), width)
    if pad:
        # Row k of the table keeps the first k bytes: gathering rows is quicker than comparing n×L positions.
        keep = (np.arange(width)[None, :] < np.arange(width + 1)[:, None]).view(np.uint8)
        np.multiply(m, np.take(keep, lengths, axis=0), out=m)
    return m


def _as_bytes(m: np.ndarray) -> np.ndarray:
    """An n×L uint8 matrix as an array of n byte strings (``S{L}``; trailing zeros dropped)."""
    return np.ascontiguousarray(m).view(f"S{m.shape[1]}").ravel()


def _unique(m: np.ndarray, few: bool = False) -> Optional[Tuple[np.ndarray, np.ndarray]]:
    """The distinct rows of a padded field matrix (from :func:`_matrix`) as byte strings, and each row's
    index among them: ``np.unique(_as_bytes(m), return_inverse=True)`` without sorting strings. With ``few``,
    None when a sample shows that most rows differ (the caller then takes another way).

    Rows are hashed 8 bytes at a time and the hashes sorted; every row is then compared with the
    representative of its hash, so a collision only costs the slower exact way.
    """
    strings = _as_bytes(m)
    words = np.ascontiguousarray(m).view(np.uint64)
    h = np.full(len(m), 0xCBF29CE484222325, np.uint64)
    for j in range(words.shape[1]):
        h = (h ^ words[:, j]) * np.uint64(0x100000001B3)
    if few:
        sample = h[:: max(1, len(h) // 2048)]
        if len(np.unique(sample)) * 2 > len(sample):
            return None
    head = np.ones(len(h), bool)
    head[1:] = h[1:] != h[:-1]
    heads = np.flatnonzero(head)
    if len(heads) * 4 <= len(h):  # runs of one value (a sorted manifest's folders, labels, frame rates)
        _, first, inverse = np.unique(h[heads], return_index=True, return_inverse=True)
        first, inverse = heads[first], inverse.ravel()[np.cumsum(head) - 1]
    else:
        _, first, inverse = np.unique(h, return_index=True, return_inverse=True)
        inverse = inverse.ravel()
    uniq = strings[first]
    if not np.array_equal(uniq[inverse], strings):
        uniq, inverse = np.unique(strings, return_inverse=True)
        inverse = inverse.ravel()
    return uniq, inverse


def _decimals(m: np.ndarray, lengths: np.ndarray, integer: bool) -> Tuple[np.ndarray, np.ndarray]:
    """Parse plain decimals (``-12.5``, ``30``) of up to 15 digits exactly; returns (values, parsed).

    Exact: the digits form an integer below 2⁵³ and the divisor 10^k (k ≤ 15) is exact in float64, so
    the quotient is the correctly rounded value, as ``float(text)`` gives. Other forms (exponents, more
    digits, ``nan``) are left to Python (``parsed`` False).
    """
    n, width = m.shape
    inside = np.arange(width) < lengths[:, None]
    digit = (m >= 48) & (m <= 57) & inside
    dot = (m == 46) & inside
    neg = (m[:, 0] == 45) & (lengths > 0)
    allowed = digit | (dot if not integer else False) | ~inside
    allowed[:, 0] |= neg
    count = digit.sum(1)
    parsed = allowed.all(1) & (count >= 1) & (count <= 15) & (dot.sum(1) <= (0 if integer else 1))
    acc = np.zeros(n, np.int64)
    frac = np.zeros(n, np.int64)
    seen = np.zeros(n, bool)
    for k in range(width):
        d = digit[:, k]
        acc = np.where(d, acc * 10 + (m[:, k].astype(np.int64) - 48), acc)
        frac += d & seen
        seen |= dot[:, k]
    if integer:
        values = np.where(neg, -acc, acc)
    else:
        values = acc / _POW10[np.minimum(frac, 15)]
        values = np.where(neg, -values, values)
    return values, parsed


class _BlockReader:
    """Converts blocks of whole CSV lines into columns (see :func:`_read_blocks`)."""

    def __init__(self, path: str, base: str, header: List[str]) -> None:
        self.path, self.base = path, base
        self.header = header
        self.ncol = len(header)
        self.index = {h: i for i, h in enumerate(header) if h in COLUMNS}
        self.rows = 0  # rows converted so far
        self.numbers: Dict[str, List[Tuple[str, np.ndarray]]] = {c: [] for c in _DTYPES if c in self.index}
        # Per number column: its distinct values so far (by bits) -> code, and the values in code order.
        self.distinct: Dict[str, Tuple[Dict[bytes, int], List[Any]]] = {c: ({}, []) for c in self.numbers}
        self.strings = {c: _Interner() for c in _STR_COLUMNS if c in self.index}
        self.pool = _NamePool()
        self.dirs = {c: _Interner() for c in _PATH_COLUMNS if c in self.index}
        self.exts = {c: _Interner() for c in _PATH_COLUMNS if c in self.index}
        self.stems: Dict[str, List[np.ndarray]] = {c: [] for c in _PATH_COLUMNS if c in self.index}
        self.resolved: Dict[bytes, Optional[str]] = {}

    def add(self, data: bytes) -> None:
        c = np.frombuffer(data, np.uint8)
        # One pass finds every byte below '0': delimiters, '/', '.', and what sends a file to the csv module.
        special = np.flatnonzero(c < 48)
        kind = c[special]
        if ((kind == 34) | (kind == 13)).any():
            raise _Irregular  # quoting, or CR line ends
        d = special[(kind == 44) | (kind == 10)]
        if len(d) % self.ncol:
            raise _Irregular  # a line with another number of fields (or a blank line): the csv module says which
        ends = d.reshape(-1, self.ncol)
        kinds = c[ends]
        if (kinds[:, -1] != 10).any() or (kinds[:, :-1] != 44).any():
            raise _Irregular
        starts = np.empty_like(ends)
        starts[:, 1:] = ends[:, :-1] + 1
        starts[0, 0] = 0
        starts[1:, 0] = ends[:-1, -1] + 1
        lengths = ends - starts
        filled = lengths > 0
        edge = np.concatenate([c[starts[filled]], c[ends[filled] - 1]])
        if ((edge == 32) | (edge == 9)).any() or not filled.any(1).all():
            raise _Irregular  # padded cells are stripped, all-empty lines skipped: the csv module does both
        buf = np.concatenate([c, np.zeros(int(lengths.max()) + 8, np.uint8)])
        self._slashes = special[kind == 47]
        self._dots = special[kind == 46]
        for col in COLUMNS:  # ``path`` first: the other path columns compare their stems with its
            if col not in self.index:
                continue
            j = self.index[col]
            s, n = starts[:, j], lengths[:, j]
            if col in _PATH_COLUMNS:
                self._add_path(col, buf, s, n)
            elif col in _STR_COLUMNS:
                self._add_string(col, buf, s, n)
            else:
                self.numbers[col].append(self._number(col, buf, s, n))
        self.rows += len(ends)

    def _line(self, k: int) -> int:
        return self.rows + k + 2  # the header is line 1, and regular blocks have one line per row

    def _decode(self, raw: bytes) -> str:
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise _Irregular from None

    def _add_string(self, col: str, buf: np.ndarray, s: np.ndarray, n: np.ndarray) -> None:
        uniq, inverse = _unique(_matrix(buf, s, n))
        interner = self.strings[col]
        codes = np.array([interner.code(self._decode(u)) for u in uniq], np.int32)
        interner.add_codes(codes[inverse])

    def _cell(self, col: str, raw: bytes, k: int) -> Any:
        """One cell of row ``k`` (of this block) by Python's rules, as its column stores it."""
        text = self._decode(raw)
        v = _parse_cell(col, text, self.path, self._line(k))
        if v is None:
            return _MISSING[col]
        if col in _INT_COLUMNS and abs(v) >= _INT_LIMIT:
            raise ManifestError(self.path, self._line(k), f"column {col!r}: {text!r} is out of range")
        return int(v) if col in _BOOL_COLUMNS else v

    def _number(self, col: str, buf: np.ndarray, s: np.ndarray, n: np.ndarray) -> Tuple[str, np.ndarray]:
        """The block's cells: ``("codes", codes into the column's distinct values)`` when they are few,
        else ``("values", array)``."""
        m = _matrix(buf, s, n)
        found = _unique(m, few=col not in _BOOL_COLUMNS)
        if found is not None and (len(found[0]) * 8 <= len(n) or col in _BOOL_COLUMNS):
            uniq, inverse = found
            # Few distinct spellings (frame rates, sizes, flags): convert each once.
            first = np.empty(len(uniq), np.int64)
            first[inverse[::-1]] = np.arange(len(n) - 1, -1, -1)
            table = np.array([self._cell(col, u, int(k)) for u, k in zip(uniq, first)], _DTYPES[col])
            index, values = self.distinct[col]
            codes = np.empty(len(table), np.int64)
            for k, v in enumerate(table):
                key = v.tobytes()  # by bits: -0.0 and 0.0 stay apart
                code = index.get(key)
                if code is None:
                    code = index[key] = len(values)
                    values.append(v)
                codes[k] = code
            return "codes", _small(codes, len(values))[inverse]
        integer = col in _INT_COLUMNS
        values, parsed = _decimals(m, n, integer=integer)
        empty = n == 0
        if integer:
            big = parsed & ~empty & (np.abs(values) >= _INT_LIMIT)
            if big.any():
                k = int(np.flatnonzero(big)[0])
                raise ManifestError(self.path, self._line(k),
                                    f"column {col!r}: {bytes(m[k, : n[k]]).decode()!r} is out of range")
        out = np.where(empty, _MISSING[col], values).astype(_DTYPES[col])
        rest = np.flatnonzero(~empty & ~parsed)
        if len(rest) and col in _FLOAT_COLUMNS:
            try:
                # More digits or an exponent: numpy's conversion, which is Python's float() to the bit.
                out[rest] = _as_bytes(m[rest]).astype(np.float64)
                rest = rest[:0]
            except ValueError:
                pass  # a cell that is not a number: Python's rules name it, with its line
        for k in rest:  # other spellings: Python's rules, and its errors
            out[k] = self._cell(col, bytes(m[k, : n[k]]), int(k))
        return "values", out

    def _resolve(self, folder: bytes) -> str:
        got = self.resolved.get(folder)
        if got is None:
            full = os.path.normpath(os.path.join(self.base, self._decode(folder)))
            got = self.resolved[folder] = full if full.endswith("/") else full + "/"
        return got

    def _add_path(self, col: str, buf: np.ndarray, s: np.ndarray, n: np.ndarray) -> None:
        empty = n == 0
        if col == "path" and empty.any():
            raise _Irregular  # the csv module names the line
        e = s + n
        # The name starts after the field's last '/'.
        slashes, dots = self._slashes, self._dots
        k = np.searchsorted(slashes, e) - 1
        last = slashes[np.maximum(k, 0)] if len(slashes) else np.full(len(s), -1)
        cut = np.where((k >= 0) & (last >= s), last + 1 - s, 0)
        name_len = n - cut
        # os.path.splitext: the extension starts at the name's last dot when a non-dot character precedes it.
        kd = np.searchsorted(dots, e) - 1
        last_dot = dots[np.maximum(kd, 0)] if len(dots) else np.full(len(s), -1)
        first_in_name = np.searchsorted(dots, s + cut)
        dots_in_name = kd + 1 - first_in_name
        if (~empty & ((name_len == 0) | ((dots_in_name == name_len) & (name_len <= 2)))).any():
            raise _Irregular  # 'x/', 'x/.', 'x/..': normpath treats these names specially
        has_ext = (kd >= 0) & (last_dot >= s + cut) & (kd - first_in_name < last_dot - s - cut)
        stem_end = np.where(has_ext, last_dot - s, n)
        uniq, inverse = _unique(_matrix(buf, s, cut))
        interner = self.dirs[col]
        codes = np.array([interner.code(self._resolve(u)) for u in uniq], np.int32)[inverse]
        if empty.any():
            codes[empty] = interner.code(None)
        interner.add_codes(codes)
        uniq, inverse = _unique(_matrix(buf, s + stem_end, n - stem_end))
        interner = self.exts[col]
        interner.add_codes(np.array([interner.code(self._decode(u)) for u in uniq], np.int32)[inverse])
        stem_len = stem_end - cut
        stems = _matrix(buf, s + cut, stem_len)
        if col == "path":
            self._path_stems = _as_bytes(stems)
            self._path_ids = self.pool.add_bytes(stems[np.arange(stems.shape[1]) < stem_len[:, None]], stem_len)
            ids = self._path_ids
        else:
            # The same stem as the row's path: store it once.
            ids = self._path_ids.copy()
            other = ~empty & (_as_bytes(stems) != self._path_stems)
            if other.any():
                sub, lens = stems[other], stem_len[other]
                ids[other] = self.pool.add_bytes(sub[np.arange(sub.shape[1]) < lens[:, None]], lens)
        self.stems[col].append(ids.astype(np.uint32))

    def finish(self) -> ManifestTable:
        size = self.rows
        numbers: Dict[str, Union[np.ndarray, _Numbers]] = {}
        for col, dtype in _DTYPES.items():
            if col in self.numbers:
                # Taken out of the reader: each column's blocks are freed once it is built.
                parts, values = self.numbers.pop(col), np.array(self.distinct[col][1], dtype)
                if all(kind == "codes" for kind, _ in parts) and len(values) <= 65536:
                    codes = np.concatenate([p for _, p in parts]) if parts else np.zeros(0, np.int64)
                    numbers[col] = _Numbers(values, _small(codes, len(values)))
                else:
                    # Many distinct values (durations): plain, as they came.
                    numbers[col] = _Numbers(np.concatenate([values[p] if kind == "codes" else p for kind, p in parts]))
            else:
                default = ManifestRow(path="").to_dict()[col]
                numbers[col] = _numeric(col, [default]) .repeat(size)
        strings = {}
        for col in _STR_COLUMNS:
            if col in self.strings:
                strings[col] = self.strings[col].finish()
            else:
                strings[col] = _Interned(np.zeros(size, np.uint8), [""])
        paths: Dict[str, _PathColumn] = {}
        shared: Optional[np.ndarray] = None
        for col in _PATH_COLUMNS:
            if col not in self.dirs:
                paths[col] = _PathColumn(_Interned(np.zeros(size, np.uint8), [None]), np.zeros(size, np.uint32),
                                         _Interned(np.zeros(size, np.uint8), [None]))
                continue
            blocks = self.stems.pop(col)
            stems = np.concatenate(blocks) if blocks else np.zeros(0, np.int64)
            del blocks
            if col == "path":
                shared = stems.astype(np.uint32)
                stems = shared
            elif shared is not None and np.array_equal(stems, shared):
                stems = shared
            paths[col] = _PathColumn(self.dirs[col].finish(), stems, self.exts[col].finish())
        return ManifestTable(size, numbers, strings, paths, self.pool.finish())


def _read_blocks(path: str, base: str) -> Tuple[Optional[ManifestTable], List[str]]:
    """The table of a regular manifest, converted a block of lines at a time; ``(None, [])`` when the file
    needs the csv module."""
    with open(path, "rb") as f:
        first = f.readline()
        if not first.endswith(b"\n") or b'"' in first or b"\r" in first:
            return None, []
        try:
            header = _header(path, first[:-1].decode("utf-8").split(","))
        except UnicodeDecodeError:
            return None, []
        reader = _BlockReader(path, base, header)
        carry = b""
        try:
            while True:
                block = f.read(_BLOCK)
                if not block:
                    if carry:
                        reader.add(carry + b"\n")
                    break
                data = carry + block
                cut = data.rfind(b"\n") + 1
                carry = data[cut:]
                if cut:
                    reader.add(data[:cut])
        except _Irregular:
            return None, []
    return reader.finish(), header


def read_manifest_table(path: PathLike) -> ManifestTable:
    """Read a manifest CSV into a :class:`ManifestTable` (see :meth:`ManifestTable.read_csv`)."""
    return ManifestTable.read_csv(path)


__all__ = ["MISSING_INT", "ManifestTable", "read_manifest_table"]
