"""Content and near-duplicate hashes for texts and images, and the one-pass image inspection.

* The content hash is exact: the text's UTF-8 bytes, or an image file's bytes (so a copy of a photo
  under another name is still a duplicate, and a version's hash covers the pixels, not the paths).
* The near hash finds items that are the same for a model but not byte for byte. Texts: case-folded,
  punctuation and runs of white space collapsed (``"Refund, please!"`` == ``"refund please"``).
  Images: a 256-bit difference hash (dHash: is each pixel of a 17x16 grey thumbnail brighter than
  its right neighbour) plus a 4x4 colour thumbnail, because dHash alone sees a red and a green
  square as equal. Two images are near duplicates when their dHashes differ in at most
  ``PHASH_MAX_BITS`` bits and no cell of their colour thumbnails differs by more than
  ``PHASH_MAX_COLOUR`` in any channel. 16x16 rather than the usual 8x8: simple pictures on a plain
  background (icons, drawings, product shots) all look alike at 8x8. Pillow only: no new dependency.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import unicodedata
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage

PHASH_SIDE = 16  # dHash grid: PHASH_SIDE x PHASH_SIDE bits
PHASH_BITS = PHASH_SIDE * PHASH_SIDE
PHASH_HEX = PHASH_BITS // 4  # hex digits of the dHash part of an image near hash
PHASH_MAX_BITS = 12  # dHash bits that may differ between near-duplicate images (of 256: under 5 %)
PHASH_MAX_COLOUR = 16  # largest difference of a colour-thumbnail channel (0-255) between near duplicates
COLOUR_SIDE = 4  # colour thumbnail: COLOUR_SIDE x COLOUR_SIDE RGB cells
COLOUR_HEX = COLOUR_SIDE * COLOUR_SIDE * 3 * 2
IMAGE_HASH_LEN = PHASH_HEX + COLOUR_HEX
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
    near_hash: str = ""  # PHASH_HEX hex digits of dHash + COLOUR_HEX of colours; "" when it does not decode
    width: int | None = None
    height: int | None = None
    size_bytes: int | None = None
    mtime: float | None = None
    problem: str | None = None  # None | "missing" | "unreadable" | "truncated" | "tiny"
    detail: str = ""  # the reason in words, for the import report


def dhash_and_colour(im: PILImage) -> str:
    """The image near hash of a decoded Pillow image (see the module docstring)."""
    from PIL import Image

    from tunedesk.engine.data.images import eight_bit

    rgb = eight_bit(im).convert("RGB")
    side = PHASH_SIDE
    grey = rgb.convert("L").resize((side + 1, side), Image.Resampling.BILINEAR)
    px = grey.tobytes()
    bits = 0
    for row in range(side):
        base = row * (side + 1)
        for col in range(side):
            bits = (bits << 1) | (px[base + col] > px[base + col + 1])
    colours = rgb.resize((COLOUR_SIDE, COLOUR_SIDE), Image.Resampling.BOX).tobytes()
    return f"{bits:0{PHASH_HEX}x}{colours.hex()}"


def split_image_hash(near_hash: str) -> tuple[int, bytes] | None:
    """(dHash bits, colour thumbnail bytes) of an image near hash; None if it is not one."""
    if len(near_hash) != IMAGE_HASH_LEN:
        return None
    return int(near_hash[:PHASH_HEX], 16), bytes.fromhex(near_hash[PHASH_HEX:])


def near_images(a: str, b: str, max_bits: int = PHASH_MAX_BITS, max_colour: int = PHASH_MAX_COLOUR) -> bool:
    """Whether two image near hashes describe near-duplicate images."""
    ha, hb = split_image_hash(a), split_image_hash(b)
    if ha is None or hb is None:
        return False
    if (ha[0] ^ hb[0]).bit_count() > max_bits:
        return False
    return all(abs(x - y) <= max_colour for x, y in zip(ha[1], hb[1]))


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
    except Exception as e:  # noqa: BLE001 - Pillow raises OSError, SyntaxError, EOFError, struct.error ... on bad data
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
