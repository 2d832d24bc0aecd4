"""Guess the text encoding of a user's file, and say where decoding fails when the guess is wrong.

Most files are UTF-8; the usual exception is a CSV saved by Excel on Windows (cp1252). Order:
byte-order mark, then "is the whole file valid UTF-8" (streamed, cheap), then charset_normalizer
on a sample (optional: it arrives with ``requests``, it is not a declared dependency), biased
towards the Windows code pages because generic detectors mislabel short Western text as
mac_latin2/cp1250. Anything that is a guess is returned with ``confident=False`` so the UI can
ask the user to check the preview.
"""

from __future__ import annotations

import codecs
from pathlib import Path

_CHUNK = 1 << 20

# When several code pages decode a sample equally well, prefer the one users most likely have.
_PREFERRED = (
    "cp1252",
    "cp1250",
    "cp1251",
    "cp1253",
    "cp1254",
    "cp1257",
    "cp1255",
    "cp1256",
    "cp1258",
    "cp932",
    "gb18030",
    "cp949",
    "big5",
    "koi8_r",
)
_CHAOS_TIE = 0.01  # mess ratios this close count as equally good
_CONFIDENT_CHAOS = 0.05
_CONFIDENT_COHERENCE = 0.3


def normalize_encoding(name: str) -> str:
    """Python's canonical spelling (``"UTF8"`` -> ``"utf-8"``); raises LookupError if unknown."""
    return codecs.lookup(name).name


def _bom_encoding(head: bytes) -> str | None:
    if head.startswith(codecs.BOM_UTF8):
        return "utf-8-sig"
    if head.startswith((codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE)):
        return "utf-32"  # checked before UTF-16: the UTF-32 LE mark starts with the UTF-16 LE one
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"
    return None


_BOMS = {"utf-16": (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE), "utf-32": (codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE)}


def missing_bom(path: Path, encoding: str) -> bool:
    """Whether ``encoding`` is plain utf-16/utf-32, which reads the byte order from a byte-order mark,
    and the (non-empty) file has none: Python's reader then fails with a bare UnicodeError ("UTF-16
    stream does not start with BOM"). ``encoding``: a normalised name."""
    marks = _BOMS.get(encoding)
    if marks is None:
        return False
    with open(path, "rb") as f:
        head = f.read(4)
    return bool(head) and not head.startswith(marks)


def first_decode_error(path: Path, encoding: str) -> tuple[int, int, bytes] | None:
    """Stream ``path`` through ``encoding``; return (byte offset, 1-based line, bad bytes) of the
    first undecodable byte, or None if the whole file decodes. Memory: one chunk at a time."""
    decoder = codecs.getincrementaldecoder(encoding)("strict")
    offset = 0  # bytes fed to the decoder so far
    newlines = 0
    with open(path, "rb") as f:
        while True:
            chunk = f.read(_CHUNK)
            final = not chunk
            pending = decoder.getstate()[0]
            try:
                text = decoder.decode(chunk, final=final)
            except UnicodeDecodeError as e:
                data = pending + chunk
                good = data[: e.start]
                try:
                    newlines += codecs.decode(good, encoding, "replace").count("\n")
                except Exception:  # noqa: BLE001 - pragma: no cover - stateful codecs; line stays approximate
                    pass
                return offset - len(pending) + e.start, newlines + 1, data[e.start : e.end]
            newlines += text.count("\n")
            offset += len(chunk)
            if final:
                return None


def _charset_normalizer_guess(sample: bytes) -> tuple[str, bool] | None:
    try:
        from charset_normalizer import from_bytes
    except ImportError:
        return None
    try:
        matches = list(from_bytes(sample))
    except Exception:  # noqa: BLE001 - a detector failure must never stop loading: fall back
        return None
    if not matches:
        return None
    candidates = [(set(m.could_be_from_charset), m.encoding, m.chaos, m.coherence) for m in matches]
    if not any("cp1252" in c[0] for c in candidates):
        # The detector stops early once something decodes cleanly; ask about cp1252 directly.
        try:
            cp = from_bytes(sample, cp_isolation=["cp1252"]).best()
        except Exception:  # noqa: BLE001 - a detector failure falls back to UTF-8
            cp = None
        if cp is not None:
            candidates.append(({"cp1252"}, "cp1252", cp.chaos, cp.coherence))
    best_chaos = min(c[2] for c in candidates)
    near = [c for c in candidates if c[2] <= best_chaos + _CHAOS_TIE]
    chosen = next(
        ((enc, c[2], c[3]) for enc in _PREFERRED for c in near if enc in c[0]),
        None,
    )
    if chosen is None:
        c = min(candidates, key=lambda c: c[2])
        chosen = (c[1], c[2], c[3])
    enc, chaos, coherence = chosen
    if enc in ("ascii", "utf_8"):
        return None  # the sample is clean but the file is not: mixed encodings, no good answer
    try:
        enc = normalize_encoding(enc)
    except LookupError:  # pragma: no cover
        return None
    return enc, chaos <= _CONFIDENT_CHAOS and coherence >= _CONFIDENT_COHERENCE


def detect_encoding(path: Path, sample_bytes: int = 1 << 20) -> tuple[str, bool]:
    """Return ``(encoding, confident)`` for a text file.

    UTF-8 is only reported if the *whole* file is valid UTF-8 (streamed; a cp1252 byte on line
    90 000 of a mostly-ASCII file must not pass as UTF-8). ``sample_bytes`` bounds the bytes given
    to the statistical detector. An empty file is ``("utf-8", True)``.
    """
    path = Path(path)
    with open(path, "rb") as f:
        head = f.read(4)
    bom = _bom_encoding(head)
    if bom:
        return bom, True
    err = first_decode_error(path, "utf-8")
    if err is None:
        return "utf-8", True
    # Give the detector the bytes around the first non-UTF-8 byte: that is where the evidence is.
    bad_offset = err[0]
    start = max(0, bad_offset - sample_bytes // 2)
    with open(path, "rb") as f:
        f.seek(start)
        sample = f.read(sample_bytes)
    if start:
        cut = sample.find(b"\n", 0, bad_offset - start)
        sample = sample[cut + 1 :] if cut >= 0 else sample  # start on a line boundary
    guess = _charset_normalizer_guess(sample)
    if guess is not None:
        return guess
    try:
        sample.decode("cp1252")
        return "cp1252", False
    except UnicodeDecodeError:
        return "latin-1", False  # decodes any byte; the preview will show if it is wrong
