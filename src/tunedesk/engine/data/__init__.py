"""The data layer: read user data (text tables, image folders), report what was left out, split it.

Everything here raises ``DataError`` (message + hint) for problems with the data as a whole and
records per-row problems in a ``DataReport`` instead of failing.
"""

from tunedesk.engine.data.encoding import detect_encoding
from tunedesk.engine.data.images import IMAGE_SUFFIXES, ImageExample, load_image, scan_image_folder
from tunedesk.engine.data.report import DataIssue, DataReport
from tunedesk.engine.data.split import check_labels, split_warnings, stratified_split
from tunedesk.engine.data.text import TABLE_SUFFIXES, TextExample, read_text_table

__all__ = [
    "IMAGE_SUFFIXES",
    "TABLE_SUFFIXES",
    "DataIssue",
    "DataReport",
    "ImageExample",
    "TextExample",
    "check_labels",
    "detect_encoding",
    "load_image",
    "read_text_table",
    "scan_image_folder",
    "split_warnings",
    "stratified_split",
]
