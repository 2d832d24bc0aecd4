"""Content and near-duplicate hashes for texts and images, and the one-pass image inspection.

* The content hash is exact: the text's UTF-8 bytes, or an image file's bytes (so a copy of a photo
  under another name is still a duplicate, and a version's hash covers the pixels, not the paths).
* The near hash finds items that are the same for a model but not byte for byte. Texts: case-folded,
  punctuation and runs of white space collapsed (``"Refund, please!"`` == ``"refund please"``).
  Images: a 64-bit difference hash (dHash: is each pixel of a 9x8 grey thumbnail brighter than its
  right neighbour) plus the mean colour, because dHash alone sees a red and a green square as equal.
  Two images are near duplicates when their dHashes differ in at most ``PHASH_MAX_BITS`` bits and
  their mean colours are close. Pillow only: no new dependency.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import unicodedata
import warnings
from dataclasses import dataclass

PHASH_MAX_BITS = 4  # dHash bits that may differ between near-duplicate images (of 64)
PHASH_MAX_COLOUR = 24  # largest difference of a mean colour channel (0-255) between near duplicates
TINY_IMAGE_PIXELS = 32  # images narrower or lower than this are flagged as tiny

_PUNCT_SPACE = re.compile(r"[\W_]+")
# The same as _PUNCT_SPACE for ASCII text, several times faster (most data sets are mostly ASCII).
_ASCII_NON_WORD = str.maketrans({c: " " for c in map(chr, range(128)) if not (c.isalnum() and c.isascii())})


def content_hash_bytes(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def text_content_hash(text: str) -> str:
    """Exact: two texts hash equal only when they are equal."""
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


def normalise_text(text: str) -> str:
    """What near-duplicate detection compares: NFKC, case-folded, punctuation and white space runs made
    one space. A text of only punctuation keeps its (case-folded) characters, so ``"?"`` and ``"!"``
    are not near duplicates of each other or of an empty text."""
    if text.isascii():
        folded = text.lower()
        norm = " ".join(folded.translate(_ASCII_NON_WORD).split())
    else:
        folded = unicodedata.normalize("NFKC", text).casefold()
        norm = " ".join(_PUNCT_SPACE.sub(" ", folded).split())
    return norm if norm else " ".join(folded.split())


def text_near_hash(text: str) -> str:
    """Hash of ``normalise_text``; ``""`` for an empty or blank text (flagged as empty instead)."""
    norm = normalise_text(text)
    if not norm:
        return ""
    return hashlib.blake2b(norm.encode("utf-8", "surrogatepass"), digest_size=12).hexdigest()


# ---- images ------------------------------------------------------------------------------------


@dataclass(slots=True)
class ImageInfo:
    """What one read of an image file tells: hashes, size, and the problem if it is not usable."""

    content_hash: str = ""
    near_hash: str = ""  # 16 hex digits of dHash + 6 of mean colour; "" when it does not decode
    width: int | None = None
    height: int | None = None
    size_bytes: int | None = None
    mtime: float | None = None
    problem: str | None = None  # None | "missing" | "unreadable" | "truncated" | "tiny"
    detail: str = ""  # the reason in words, for the import report


def dhash_and_colour(im) -> str:
    """The image near hash of a decoded Pillow image (see the module docstring)."""
    from PIL import Image

    rgb = im.convert("RGB")
    grey = rgb.convert("L").resize((9, 8), Image.Resampling.BILINEAR)
    px = grey.tobytes()
    bits = 0
    for row in range(8):
        base = row * 9
        for col in range(8):
            bits = (bits << 1) | (px[base + col] > px[base + col + 1])
    r, g, b = rgb.resize((1, 1), Image.Resampling.BOX).getpixel((0, 0))
    return f"{bits:016x}{r:02x}{g:02x}{b:02x}"


def near_images(a: str, b: str, max_bits: int = PHASH_MAX_BITS, max_colour: int = PHASH_MAX_COLOUR) -> bool:
    """Whether two image near hashes describe near-duplicate images."""
    if len(a) != 22 or len(b) != 22:
        return False
    if (int(a[:16], 16) ^ int(b[:16], 16)).bit_count() > max_bits:
        return False
    return all(abs(int(a[i : i + 2], 16) - int(b[i : i + 2], 16)) <= max_colour for i in (16, 18, 20))


def inspect_image(path: str, tiny: int = TINY_IMAGE_PIXELS) -> ImageInfo:
    """Read an image file once: content hash of its bytes, a full decode (which is what catches a
    file cut short: Pillow's ``verify()`` alone does not), its size and near hash. Never raises for
    a bad file: the problem is returned so the item can be imported and flagged."""
    from PIL import Image, UnidentifiedImageError

    info = ImageInfo()
    try:
        st = os.stat(path)
        info.size_bytes, info.mtime = st.st_size, st.st_mtime
        with open(path, "rb") as fh:
            data = fh.read()
    except FileNotFoundError:
        info.problem, info.detail = "missing", "file not found"
        return info
    except OSError as e:  # permission denied, a symlink loop ("too many levels of symbolic links"), ...
        info.problem, info.detail = "unreadable", f"cannot open: {e.strerror or e}"
        return info
    info.content_hash = content_hash_bytes(data)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # DecompressionBombWarning, palette transparency
            with Image.open(io.BytesIO(data)) as im:
                info.width, info.height = im.size
                if im.format == "JPEG":
                    im.draft("RGB", (64, 64))  # decode at 1/8 scale: 10x faster, truncation still caught
                im.load()
                info.near_hash = dhash_and_colour(im)
    except UnidentifiedImageError:
        info.problem, info.detail = "unreadable", "not a readable image: unknown or damaged format"
        return info
    except Image.DecompressionBombError as e:
        info.problem, info.detail = "unreadable", f"too large: {e}"
        return info
    except Exception as e:  # Pillow raises OSError, SyntaxError, EOFError, struct.error ... on bad data
        text = str(e)
        if "truncated" in text.lower() or isinstance(e, EOFError):
            info.problem, info.detail = "truncated", "truncated image: the file is cut short"
        else:
            info.problem, info.detail = "unreadable", f"corrupt image: {text or type(e).__name__}"
        return info
    if info.width is not None and info.height is not None and (info.width < tiny or info.height < tiny):
        info.problem = "tiny"
        info.detail = f"tiny image: {info.width}x{info.height} pixels (under {tiny})"
    return info
