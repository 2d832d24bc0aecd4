#!/usr/bin/env python3
"""Render tunedesk.svg to tunedesk.png (256x256) with Qt's own SVG renderer.

Why Qt: the app draws these icons with QSvgRenderer, so rendering the PNG the same way shows
exactly what users will see. Runs headless (QT_QPA_PLATFORM=offscreen).

Usage:  python resources/icons/render_png.py [--sheet PATH]   (--sheet: also write a preview of
        every icon on light and dark backgrounds, for eyeballing changes; not committed)
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from PySide6.QtCore import QRectF, Qt
from PySide6.QtGui import QColor, QGuiApplication, QImage, QPainter
from PySide6.QtSvg import QSvgRenderer

HERE = Path(__file__).resolve().parent


def render(svg: Path, size: int) -> QImage:
    """Render one SVG into a transparent ARGB image of size x size pixels."""
    renderer = QSvgRenderer(str(svg))
    if not renderer.isValid():
        raise SystemExit(f"invalid SVG: {svg}")
    img = QImage(size, size, QImage.Format.Format_ARGB32_Premultiplied)
    img.fill(Qt.GlobalColor.transparent)
    p = QPainter(img)
    p.setRenderHint(QPainter.RenderHint.Antialiasing)
    renderer.render(p, QRectF(0, 0, size, size))
    p.end()
    return img


def sheet(path: Path, size: int = 72, pad: int = 16) -> None:
    """Write a preview grid: each icon on a light row and a dark row."""
    svgs = sorted(HERE.glob("*.svg"))
    w = len(svgs) * (size + pad) + pad
    img = QImage(w, 2 * (size + 2 * pad), QImage.Format.Format_ARGB32_Premultiplied)
    p = QPainter(img)
    for row, bg in enumerate(("#f5f6f8", "#1e2227")):
        y0 = row * (size + 2 * pad)
        p.fillRect(0, y0, w, size + 2 * pad, QColor(bg))
        for i, svg in enumerate(svgs):
            p.drawImage(pad + i * (size + pad), y0 + pad, render(svg, size))
    p.end()
    img.save(str(path))
    print("preview:", path, "order:", " ".join(s.stem for s in svgs))


def main() -> int:
    ap = argparse.ArgumentParser(description="Render TuneDesk icons to PNG.")
    ap.add_argument("--sheet", type=Path, help="also write a preview grid of all icons here")
    args = ap.parse_args()
    _app = QGuiApplication(sys.argv)
    out = HERE / "tunedesk.png"
    if not render(HERE / "tunedesk.svg", 256).save(str(out)):
        raise SystemExit(f"could not write {out}")
    print("wrote", out)
    if args.sheet:
        sheet(args.sheet)
    return 0


if __name__ == "__main__":
    sys.exit(main())
