"""Reading, checking and writing the ABAW annotations of s-Aff-Wild2 and Aff-Wild2.

Taught in ``01_data``. Everything works on one *table*, a pandas DataFrame with one row per
frame and the columns of :data:`TABLE_COLUMNS`:

    image, video, frame, valence, arousal, expression, AU1 ... AU26, has_va, has_expr, has_au

Missing labels keep the files' markers (valence/arousal ``-5``, expression ``-1``, AUs ``-1``)
and the ``has_*`` flags say which tasks a frame is labelled for. The readers check every line
and raise :class:`AnnotationError` naming the file, the line and what is wrong. The label
statistics (counts, loss weights, AU co-occurrence) are in :mod:`course_lib.data.label_stats`. The PyTorch datasets that
turn a table plus the ``cropped_aligned/`` frames into tensors are in
:mod:`course_lib.data.datasets`.
"""

from __future__ import annotations

import csv
import errno
import io
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from ..files import atomic_write
from ..labels import AU_NAMES, EXPR_NAMES, MISSING_AU, MISSING_EXPR, MISSING_VA, MTL_HEADER


VA_COLUMNS: tuple[str, ...] = ("valence", "arousal")
#: The label columns, in file order.
LABEL_COLUMNS: tuple[str, ...] = (*VA_COLUMNS, "expression", *AU_NAMES)
#: The 16 fields of a line of an s-Aff-Wild2 multi-task annotation file.
MTL_COLUMNS: tuple[str, ...] = ("image", *LABEL_COLUMNS)
#: The columns of a table, in order.
TABLE_COLUMNS: tuple[str, ...] = ("image", "video", "frame", *LABEL_COLUMNS, "has_va", "has_expr", "has_au")

#: Per-task release: task -> accepted folder names (the EXPR folder was renamed once).
TASK_FOLDERS: dict[str, tuple[str, ...]] = {
    "au": ("AU_Detection_Challenge",),
    "expr": ("EXPR_Recognition_Challenge", "EXPR_Classification_Challenge"),
    "va": ("VA_Estimation_Challenge",),
}
#: Per-task release: the label columns of one data line of each task's files.
TASK_COLUMNS: dict[str, tuple[str, ...]] = {"au": AU_NAMES, "expr": ("expression",), "va": VA_COLUMNS}
SPLIT_FOLDERS: dict[str, str] = {"train": "Train_Set", "validation": "Validation_Set"}
#: The folder under the data root that holds ``<video>/<NNNNN>.jpg``.
FRAMES_FOLDER = "cropped_aligned"
#: The annotation file of each split under a data root (the s-Aff-Wild2 multi-task release).
SPLIT_FILES: dict[str, str] = {"train": "training_set_annotations.txt",
                               "validation": "validation_set_annotations.txt"}
#: The test split as the challenge hands it out: a list of image names, no labels. Its header is
#: the submission's (ABAW_FACTS.md: "Submission/test-list header").
TEST_LIST = "test_set_images.txt"
TEST_LIST_HEADER = "image,valence,arousal,expression,aus"
#: The test labels, which the organisers keep: SynthAffWild stores them apart, so that a lesson
#: scores the test split once, the way the organisers score a submission.
TEST_LABELS = "test_labels/test_set_annotations.txt"

_IMAGE_PATTERN = r"^([^/,\s]+)/(\d+)\.jpg$"
_MISSING = {"valence": MISSING_VA, "arousal": MISSING_VA, "expression": MISSING_EXPR,
            **{au: MISSING_AU for au in AU_NAMES}}


class AnnotationError(ValueError):
    """A malformed annotation file: ``path`` and ``line`` (1-based, the header is line 1) say where."""

    def __init__(self, path: str | os.PathLike, line: int, problem: str) -> None:
        self.path = Path(path)
        self.line = line
        self.problem = problem
        super().__init__(f"{self.path} line {line}: {problem}")

    def __reduce__(self):  # keep the attributes when pickled (DataLoader workers)
        return type(self), (self.path, self.line, self.problem)


# --------------------------------------------------------------------------- parsing


def _read_lines(path: Path) -> tuple[str, list[str]]:
    """The header and the data lines of a text file (LF or CRLF; trailing blank lines dropped)."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise FileNotFoundError(errno.ENOENT, "annotation file not found", str(path)) from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise AnnotationError(path, raw[: exc.start].count(b"\n") + 1, "not UTF-8 text") from None
    text = text.replace("\r\n", "\n")
    stray = text.find("\r")
    if stray >= 0:
        raise AnnotationError(path, text.count("\n", 0, stray) + 1,
                              "stray carriage return (\\r): use LF or CRLF line endings")
    lines = text.split("\n")
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        raise AnnotationError(path, 1, "empty file: expected a header line")
    return lines[0], lines[1:]


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _parse_file(path: Path, columns: tuple[str, ...]) -> tuple[pd.DataFrame, list[str]]:
    """Split one annotation file into its fields: ``image`` as text, labels as float64 (NaN: not a number).

    Structural problems (no header, blank lines, wrong field counts) raise here; the values
    are checked by :func:`_first_problem`. Returns the fields and the raw data lines.
    """
    header, lines = _read_lines(path)
    if not header.strip():
        raise AnnotationError(path, 1, "blank first line: expected a header line")
    has_image = columns[0] == "image"
    names = header.split(",")[1:] if has_image else header.split(",")
    if names and all(_is_number(name) for name in names):
        raise AnnotationError(path, 1, "looks like data, not a header: the file must start with a header line")
    n = len(columns)
    blank = np.fromiter((not line.strip() for line in lines), bool, len(lines))
    commas = np.fromiter((line.count(",") for line in lines), np.int64, len(lines))
    bad = np.flatnonzero(blank | (commas != n - 1))
    if bad.size:
        row = int(bad[0])
        problem = ("blank line (only the end of the file may have empty lines)" if blank[row] else
                   f"expected {n} comma-separated field{'s' if n > 1 else ''}, got {commas[row] + 1}")
        raise AnnotationError(path, row + 2, problem)
    labels = list(columns[has_image:])
    dtypes = {c: (str if c == "image" else "float64") for c in columns}
    if not lines:
        return pd.DataFrame({c: pd.Series(dtype=dtypes[c]) for c in columns}), lines
    options = dict(header=None, names=list(columns), quoting=csv.QUOTE_NONE, keep_default_na=False,
                   na_values=[""], engine="c")
    try:  # fast path: every label parses as a number
        fields = pd.read_csv(io.StringIO("\n".join(lines)), dtype=dtypes, **options)
    except ValueError:  # some text among the numbers: parse as text, non-numbers become NaN
        fields = pd.read_csv(io.StringIO("\n".join(lines)), dtype=str, **options)
        for c in labels:
            fields[c] = pd.to_numeric(fields[c], errors="coerce").astype("float64")
    return fields, lines


def _fmt(x: float) -> str:
    return f"{x:g}"


def _first_problem(fields: pd.DataFrame, where: Callable[[int], str],
                   raw: Callable[[int, str], str] | None = None) -> tuple[int, str] | None:
    """The first row (and what is wrong with it) breaking a rule of the annotation format.

    ``fields`` holds float64 label columns (any subset of :data:`LABEL_COLUMNS`) and optionally
    ``image``; ``where(row)`` names a row in messages, ``raw(row, column)`` gives the text of a
    field that is not a number. One code path for every file kind and for the writer.
    Vectorised: each rule finds its first offending row; the earliest row wins.
    """
    found: list[tuple[int, Callable[[], str]]] = []

    def first(mask: np.ndarray, message: Callable[[int], str]) -> None:
        hits = np.flatnonzero(mask)
        if hits.size:
            row = int(hits[0])
            found.append((row, lambda: message(row)))

    labels = [c for c in LABEL_COLUMNS if c in fields.columns]
    if labels:
        values = fields[labels].to_numpy(np.float64)
        nan = np.isnan(values)

        def not_a_number(row: int) -> str:
            column = labels[int(np.flatnonzero(nan[row])[0])]
            text = raw(row, column) if raw is not None else "NaN"
            return f"{column} is empty" if text == "" else f"{column} is not a number: {text!r}"

        first(nan.any(axis=1), not_a_number)
    if "image" in fields.columns:
        image = fields["image"].astype(object).where(fields["image"].notna(), "")
        ok = image.str.match(_IMAGE_PATTERN).fillna(False).to_numpy(bool)
        first(~ok, lambda r: f"image name {image.iloc[r]!r} is not of the form <video>/<digits>.jpg")
        dup = image.duplicated().to_numpy()

        def duplicate(row: int) -> str:
            name = image.iloc[row]
            earlier = int(np.flatnonzero((image == name).to_numpy())[0])
            return f"duplicate image {name!r} (first on {where(earlier)})"

        first(dup, duplicate)
    if all(c in fields.columns for c in VA_COLUMNS):
        va = fields[list(VA_COLUMNS)].to_numpy(np.float64)
        for k, name in enumerate(VA_COLUMNS):
            v = va[:, k]
            bad = ~((v == MISSING_VA) | ((v >= -1) & (v <= 1)))
            first(bad, lambda r, v=v, name=name:
                  f"{name} must be in [-1, 1] or exactly {_fmt(MISSING_VA)} (missing), got {_fmt(v[r])}")
        va_gone = va == MISSING_VA

        def half_missing(row: int) -> str:
            k = 0 if va_gone[row, 0] else 1
            return (f"{VA_COLUMNS[k]} is {_fmt(MISSING_VA)} (missing) but {VA_COLUMNS[1 - k]} is "
                    f"{_fmt(va[row, 1 - k])}: both must be {_fmt(MISSING_VA)} or neither")

        first(va_gone[:, 0] != va_gone[:, 1], half_missing)
    if "expression" in fields.columns:
        e = fields["expression"].to_numpy(np.float64)
        bad = ~((e == np.round(e)) & (e >= MISSING_EXPR) & (e <= len(EXPR_NAMES) - 1))
        first(bad, lambda r: f"expression must be an integer in {MISSING_EXPR}..{len(EXPR_NAMES) - 1} "
                             f"({MISSING_EXPR} = missing), got {_fmt(e[r])}")
    if all(c in fields.columns for c in AU_NAMES):
        au = fields[list(AU_NAMES)].to_numpy(np.float64)
        bad_value = ~np.isin(au, (MISSING_AU, 0, 1))

        def au_value(row: int) -> str:
            k = int(np.flatnonzero(bad_value[row])[0])
            return f"{AU_NAMES[k]} must be 0, 1 or {MISSING_AU} (missing), got {_fmt(au[row, k])}"

        first(bad_value.any(axis=1), au_value)
        au_gone = au == MISSING_AU

        def partly_missing(row: int) -> str:
            names = ", ".join(np.asarray(AU_NAMES)[au_gone[row]])
            return (f"AUs partly missing ({names} {MISSING_AU}, the others not): a frame without AU "
                    f"labels has all {len(AU_NAMES)} AUs set to {MISSING_AU}")

        first(au_gone.any(axis=1) & ~au_gone.all(axis=1), partly_missing)
    if not found:
        return None
    row, message = min(found, key=lambda item: item[0])  # min keeps the first rule on ties
    return row, message()


def _read_checked(path: Path, columns: tuple[str, ...]) -> pd.DataFrame:
    """Parse one annotation file and check every value; the first bad line raises AnnotationError."""
    fields, lines = _parse_file(path, columns)

    def raw(row: int, column: str) -> str:
        return lines[row].split(",")[columns.index(column)].strip()

    problem = _first_problem(fields, where=lambda r: f"line {r + 2}", raw=raw)
    if problem is not None:
        row, message = problem
        raise AnnotationError(path, row + 2, message)
    return fields


def make_table(image: Sequence[str] | pd.Series, video: Sequence[str] | pd.Series,
               frame: Sequence[int] | np.ndarray, labels: pd.DataFrame) -> pd.DataFrame:
    """Assemble a table (:data:`TABLE_COLUMNS`, dtypes included) from checked fields, ``labels`` holding the
    :data:`LABEL_COLUMNS`; the readers and :mod:`course_lib.data.synth` build every table with it."""
    va = labels[list(VA_COLUMNS)].to_numpy(np.float32)
    expr = labels["expression"].to_numpy(np.float64).astype(np.int64)
    au = labels[list(AU_NAMES)].to_numpy(np.float64).astype(np.int64)
    table = pd.DataFrame({
        "image": pd.Series(np.asarray(image, dtype=object), dtype=object).astype(str),
        "video": pd.Series(np.asarray(video, dtype=object), dtype=object).astype(str),
        "frame": np.asarray(frame, dtype=np.int64),
        "valence": va[:, 0], "arousal": va[:, 1], "expression": expr,
        **{name: au[:, k] for k, name in enumerate(AU_NAMES)},
        "has_va": (va != MISSING_VA).all(axis=1),
        "has_expr": expr != MISSING_EXPR,
        "has_au": (au != MISSING_AU).all(axis=1),
    })
    return table


# --------------------------------------------------------------------------- readers and writer


def read_mtl_annotations(path: str | os.PathLike) -> pd.DataFrame:
    """Read an s-Aff-Wild2 multi-task annotation file (``training_set_annotations.txt``, ...).

    Line 1 is a header (skipped; its exact text is unconfirmed), then one frame per line:
    ``image,valence,arousal,expression,AU1,...,AU26``. Returns a table with the columns of
    :data:`TABLE_COLUMNS`, in file order. Any malformed line raises :class:`AnnotationError`
    naming the file and the line; a missing file raises ``FileNotFoundError``.
    """
    path = Path(path)
    fields = _read_checked(path, MTL_COLUMNS)
    parts = [name.rpartition("/") for name in fields["image"].tolist()]  # checked: <video>/<digits>.jpg
    video = [part[0] for part in parts]
    frame = np.fromiter((int(part[2][:-4]) for part in parts), np.int64, len(parts))
    return make_table(fields["image"], video, frame, fields)


def read_per_task_annotations(root: str | os.PathLike, split: str) -> pd.DataFrame:
    """Read the per-task Aff-Wild2 release and merge the tasks per frame into one table.

    ``root`` holds ``AU_Detection_Challenge/``, ``EXPR_Recognition_Challenge/`` (or the older
    ``EXPR_Classification_Challenge/``) and ``VA_Estimation_Challenge/``, each with
    ``Train_Set/`` and ``Validation_Set/`` (``split`` is ``"train"`` or ``"validation"``) of
    ``<video>.txt`` files: a header, then data line i for frame ``<video>/{i:05d}.jpg``.
    A task whose folder is absent has every label missing; a frame one task does not cover is
    missing for that task. Sorted by video, then frame. The lines are checked as in
    :func:`read_mtl_annotations`.
    """
    root = Path(root)
    if split not in SPLIT_FOLDERS:
        raise ValueError(f"unknown split {split!r}: use one of {sorted(SPLIT_FOLDERS)}")
    parts: list[pd.DataFrame] = []
    for task, names in TASK_FOLDERS.items():
        folders = [root / name for name in names if (root / name).is_dir()]
        if not folders:
            continue
        if len(folders) > 1:
            raise ValueError(f"both {folders[0]} and {folders[1]} exist: keep only one of them")
        split_dir = folders[0] / SPLIT_FOLDERS[split]
        if not split_dir.is_dir():
            raise FileNotFoundError(errno.ENOENT, f"{folders[0].name} has no {SPLIT_FOLDERS[split]}/ folder",
                                    str(split_dir))
        columns = TASK_COLUMNS[task]
        videos = []
        for file in sorted(split_dir.glob("*.txt")):
            fields = _read_checked(file, columns)
            fields.insert(0, "video", file.stem)
            fields.insert(1, "frame", np.arange(1, len(fields) + 1, dtype=np.int64))
            videos.append(fields)
        empty = pd.DataFrame({"video": pd.Series(dtype=object), "frame": pd.Series(dtype=np.int64),
                              **{c: pd.Series(dtype="float64") for c in columns}})
        parts.append(pd.concat(videos, ignore_index=True) if videos else empty)
    if not parts:
        folders = ", ".join(name for names in TASK_FOLDERS.values() for name in names)
        raise FileNotFoundError(errno.ENOENT, f"no per-task annotation folder ({folders})", str(root))
    merged = parts[0]
    for part in parts[1:]:
        merged = merged.merge(part, on=["video", "frame"], how="outer")
    for column in LABEL_COLUMNS:
        merged[column] = merged[column].fillna(_MISSING[column]) if column in merged else _MISSING[column]
    merged = merged.sort_values(["video", "frame"], kind="stable", ignore_index=True)
    video = merged["video"].astype(object).astype(str)
    image = video + "/" + merged["frame"].map("{:05d}.jpg".format)
    return make_table(image, video, merged["frame"].to_numpy(np.int64), merged)


def read_test_list(path: str | os.PathLike) -> pd.DataFrame:
    """Read a test list (:data:`TEST_LIST`): a header line, then one image name ``<video>/<digits>.jpg`` per line.

    Returns a table with the columns of :data:`TABLE_COLUMNS` whose labels are all missing, so
    that the datasets and :func:`course_lib.train.predict` take it like an annotation table. A
    malformed or repeated name raises :class:`AnnotationError` naming the file and the line.
    """
    path = Path(path)
    _, lines = _read_lines(path)
    pattern, seen = re.compile(_IMAGE_PATTERN), {}
    for number, line in enumerate(lines, start=2):
        name = line.strip().split(",")[0] if line.strip() else ""
        if not pattern.match(name):
            raise AnnotationError(path, number, f"expected an image name <video>/<digits>.jpg, got {line.strip()!r}")
        if name in seen:
            raise AnnotationError(path, number, f"image {name!r} already listed on line {seen[name]}")
        seen[name] = number
    images = list(seen)
    parts = [name.rpartition("/") for name in images]
    labels = pd.DataFrame({c: np.full(len(images), _MISSING[c], dtype=np.float64) for c in LABEL_COLUMNS})
    return make_table(images, [p[0] for p in parts],
                       np.fromiter((int(p[2][:-4]) for p in parts), np.int64, len(parts)), labels)


def write_test_list(images: Sequence[str], path: str | os.PathLike) -> Path:
    """Write a test list (header :data:`TEST_LIST_HEADER`, one image name per line), atomically."""
    path = Path(path)
    atomic_write(path, TEST_LIST_HEADER + "\n" + "".join(f"{name}\n" for name in images), durable=True)
    return path


def _format_floats(values: np.ndarray) -> np.ndarray:
    """Compact text for float32 values: up to 4 decimals when exact (``-5``, ``0.25``), else the
    shortest text that reads back to the same float32."""
    v = np.asarray(values, dtype=np.float32)
    text = np.char.rstrip(np.char.rstrip(np.char.mod("%.4f", v.astype(np.float64)), "0"), ".").astype(object)
    text[text == "-0"] = "0"
    inexact = np.flatnonzero(text.astype(np.float32) != v) if len(v) else np.zeros(0, np.int64)
    for i in inexact:
        text[i] = np.format_float_positional(v[i], unique=True, trim="-")
    return text


def write_mtl_annotations(table: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write a table in the s-Aff-Wild2 multi-task format, atomically; returns ``path``.

    Header :data:`course_lib.labels.MTL_HEADER`, ``\\n`` line endings, compact numbers. Only
    the 16 file columns are written (``has_*`` follow from the values). A table that
    :func:`read_mtl_annotations` would reject raises ``ValueError`` naming the row, and
    nothing is written. ``read_mtl_annotations(write_mtl_annotations(t, p))`` equals ``t``.
    """
    path = Path(path)
    missing = [c for c in MTL_COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(f"cannot write {path}: the table lacks the columns {missing}")
    fields = table[list(MTL_COLUMNS)].reset_index(drop=True)
    fields = fields.assign(**{c: pd.to_numeric(fields[c], errors="coerce").astype("float64")
                              for c in LABEL_COLUMNS})
    problem = _first_problem(fields, where=lambda r: f"row {r}")
    if problem is not None:
        row, message = problem
        raise ValueError(f"cannot write {path}: row {row}: {message}")
    out = pd.DataFrame({
        "image": fields["image"].astype(object),
        "valence": _format_floats(fields["valence"].to_numpy()),
        "arousal": _format_floats(fields["arousal"].to_numpy()),
        **{c: fields[c].to_numpy().astype(np.int64) for c in ("expression", *AU_NAMES)},
    })
    body = out.to_csv(header=False, index=False, lineterminator="\n", quoting=csv.QUOTE_NONE)
    atomic_write(path, MTL_HEADER + "\n" + body, durable=True)
    return path


def checked_table(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` with its index reset; one without every column of :data:`TABLE_COLUMNS` raises
    ``ValueError`` (the datasets and feature extraction check their table with it)."""
    missing = [c for c in TABLE_COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(f"the table lacks the columns {missing}: build it with read_mtl_annotations "
                         "or read_per_task_annotations")
    return table.reset_index(drop=True)


def read_split(root: str | os.PathLike, split: str) -> pd.DataFrame:
    """The table of one split of ``root``: ``"train"`` and ``"validation"`` read their annotation file
    (:data:`SPLIT_FILES`), ``"test"`` the test list (:data:`TEST_LIST`, every label missing)."""
    root = Path(root)
    if split == "test":
        return read_test_list(root / TEST_LIST)
    if split not in SPLIT_FILES:
        raise ValueError(f"unknown split {split!r}: use one of {[*SPLIT_FILES, 'test']}")
    return read_mtl_annotations(root / SPLIT_FILES[split])
