"""Real labelled text that exists offline here: the calibration sets for TuneDesk's defaults.

Nobody on the project wrote these texts, and none of them is the demo data:

- ``debian``: one-line descriptions of Debian packages labelled by their archive section (admin, games,
  graphics, net, science, sound), read from apt's package list (``apt-get update`` fills it).
- ``wordnet``: WordNet 3.0 noun definitions labelled by their lexicographer file (act, animal, artifact,
  communication, person, state), from the Debian package ``wordnet-base``.
- ``fortunes``: fortune-cookie quotations labelled by their file (computers, education, food, law,
  politics, science), from the Debian package ``fortunes``.
- ``debianlong`` (not in the default list): the same sections with each package's whole description
  (summary line and paragraphs; median 89 tokens, a quarter over 128, longest 518), from the archive's
  English translation file ``Translation-en.xz`` (downloaded once from the mirror apt uses). For the
  ``max_length`` question: does a longer cut pay on longer texts?

``python benchmarks/calibration_sets.py OUT_DIR`` writes ``OUT_DIR/<name>.csv`` (columns text, label).
The Debian packages are unpacked from ``apt-get download`` into a cache folder, never installed.
Sampling is seeded and balanced per class, so every machine writes the same files.
"""

from __future__ import annotations

import csv
import glob
import gzip
import random
import re
import subprocess
import sys
from pathlib import Path

PER_CLASS = 120  # 6 classes -> 720 items; a 25 % validation split keeps 180 (CPU time is the limit here)
SEED = 7

DEBIAN_SECTIONS = ("admin", "games", "graphics", "net", "science", "sound")
WORDNET_LEXFILES = {"04": "act", "05": "animal", "06": "artifact", "10": "communication", "18": "person", "26": "state"}
FORTUNE_FILES = ("computers", "education", "food", "law", "politics", "science")


def _debs(cache: Path, *packages: str) -> Path:
    """Unpack Debian packages (downloaded, not installed) into ``cache/root``."""
    root = cache / "root"
    marker = cache / f".{'-'.join(packages)}.done"
    if marker.exists():
        return root
    cache.mkdir(parents=True, exist_ok=True)
    subprocess.run(["apt-get", "download", *packages], cwd=cache, check=True, capture_output=True)
    for deb in sorted(cache.glob("*.deb")):
        subprocess.run(["dpkg", "-x", str(deb), str(root)], check=True)
    marker.write_text("ok\n")
    return root


def _balanced(rows: list[tuple[str, str]], per_class: int) -> list[tuple[str, str]]:
    rng = random.Random(SEED)
    by_label: dict[str, list[str]] = {}
    for text, label in rows:
        by_label.setdefault(label, []).append(text)
    out: list[tuple[str, str]] = []
    for label in sorted(by_label):
        texts = sorted(set(by_label[label]))
        rng.shuffle(texts)
        out += [(t, label) for t in texts[:per_class]]
    rng.shuffle(out)
    return out


def _package_list() -> str:
    lists = sorted(glob.glob("/var/lib/apt/lists/*_main_binary-*_Packages*"))
    if not lists:
        raise SystemExit("no apt package list: run `apt-get update` once")
    path = lists[0]
    if path.endswith(".lz4"):
        return subprocess.run(["lz4cat", path], check=True, capture_output=True, text=True).stdout
    if path.endswith(".gz"):
        return gzip.decompress(Path(path).read_bytes()).decode("utf-8", "replace")
    return Path(path).read_text(encoding="utf-8", errors="replace")


def debian(cache: Path) -> list[tuple[str, str]]:
    rows = []
    for stanza in _package_list().split("\n\n"):
        section = re.search(r"^Section: (.+)$", stanza, re.M)
        desc = re.search(r"^Description: (.+)$", stanza, re.M)
        if section and desc and section.group(1) in DEBIAN_SECTIONS:
            rows.append((desc.group(1).strip(), section.group(1)))
    return _balanced(rows, PER_CLASS)


def wordnet(cache: Path) -> list[tuple[str, str]]:
    root = _debs(cache / "wordnet", "wordnet-base")
    rows = []
    for line in (root / "usr/share/wordnet/data.noun").read_text(encoding="utf-8", errors="replace").splitlines():
        if line.startswith("  ") or "|" not in line:
            continue  # the licence header
        lexfile = line.split()[1]
        if lexfile in WORDNET_LEXFILES:
            gloss = line.split("|", 1)[1].split(";")[0].strip()  # the definition, without examples
            if len(gloss) >= 12:
                rows.append((gloss, WORDNET_LEXFILES[lexfile]))
    return _balanced(rows, PER_CLASS)


def fortunes(cache: Path) -> list[tuple[str, str]]:
    root = _debs(cache / "fortunes", "fortunes")
    rows = []
    for name in FORTUNE_FILES:
        raw = (root / "usr/share/games/fortunes" / f"{name}.u8").read_text(encoding="utf-8", errors="replace")
        for quote in raw.split("\n%\n"):
            text = " ".join(quote.split())
            if 20 <= len(text) <= 300:  # short quotations: 128 tokens hold all of them
                rows.append((text, name))
    return _balanced(rows, PER_CLASS)


TRANSLATIONS = "http://deb.debian.org/debian/dists/bookworm/main/i18n/Translation-en.xz"


def debianlong(cache: Path) -> list[tuple[str, str]]:
    import lzma
    import urllib.request

    path = cache / "Translation-en.xz"
    if not path.exists():
        cache.mkdir(parents=True, exist_ok=True)
        urllib.request.urlretrieve(TRANSLATIONS, path)
    full = {}  # Description-md5 -> "summary. paragraphs"
    with lzma.open(path, "rt", encoding="utf-8", errors="replace") as fh:
        translations = fh.read()
    for stanza in translations.split("\n\n"):
        md5 = re.search(r"^Description-md5: (.+)$", stanza, re.M)
        parts = stanza.split("Description-en: ", 1)
        if md5 and len(parts) == 2:
            lines = parts[1].split("\n")
            body = " ".join(line.strip() for line in lines[1:] if line.strip() not in ("", "."))
            full[md5.group(1)] = f"{lines[0].strip()}. {body}"
    rows = []
    for stanza in _package_list().split("\n\n"):
        section = re.search(r"^Section: (.+)$", stanza, re.M)
        md5 = re.search(r"^Description-md5: (.+)$", stanza, re.M)
        if section and md5 and section.group(1) in DEBIAN_SECTIONS and md5.group(1) in full:
            rows.append((full[md5.group(1)], section.group(1)))
    return _balanced(rows, PER_CLASS)


BUILDERS = {"debian": debian, "wordnet": wordnet, "fortunes": fortunes, "debianlong": debianlong}
DEFAULT_SETS = ("debian", "wordnet", "fortunes")


def write_sets(out_dir: Path, names: list[str] | None = None, cache: Path | None = None) -> dict[str, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    cache = cache or out_dir / "_debs"
    paths = {}
    for name in names or list(DEFAULT_SETS):
        path = out_dir / f"{name}.csv"
        if not path.exists():
            rows = BUILDERS[name](cache)
            with open(path, "w", newline="", encoding="utf-8") as fh:
                w = csv.writer(fh)
                w.writerow(["text", "label"])
                w.writerows(rows)
        paths[name] = path
    return paths


if __name__ == "__main__":
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "calibration-data")
    for name, p in write_sets(out).items():
        with open(p, encoding="utf-8") as fh:
            n = sum(1 for _ in fh) - 1
        print(f"{name}: {n} items -> {p}")
