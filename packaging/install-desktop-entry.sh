#!/usr/bin/env bash
# Install (or remove) TuneDesk's freedesktop menu entry and icon for the current user.
#
#   packaging/install-desktop-entry.sh              install into ~/.local/share
#   packaging/install-desktop-entry.sh --uninstall  remove them again
#
# Uses xdg-utils (xdg-icon-resource, xdg-desktop-menu) when present, else copies the files into
# ${XDG_DATA_HOME:-~/.local/share} itself. Never needs root and never touches system folders.
#
# Desktop launchers do not read your shell's PATH changes (virtual environments, ~/.local/bin in
# .bashrc), so when `tunedesk` is found on PATH the installed entry gets its absolute path.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
desktop_src="$here/tunedesk.desktop"
icon_png="$root/resources/icons/tunedesk.png"
icon_svg="$root/resources/icons/tunedesk.svg"
data_home="${XDG_DATA_HOME:-$HOME/.local/share}"
apps_dir="$data_home/applications"
icons_dir="$data_home/icons/hicolor"

have() { command -v "$1" >/dev/null 2>&1; }

refresh_caches() {
    if have update-desktop-database; then update-desktop-database -q "$apps_dir" 2>/dev/null || true; fi
    if have gtk-update-icon-cache; then gtk-update-icon-cache -q -t "$icons_dir" 2>/dev/null || true; fi
}

uninstall() {
    if have xdg-desktop-menu; then
        xdg-desktop-menu uninstall --mode user tunedesk.desktop 2>/dev/null || true
    fi
    if have xdg-icon-resource; then
        xdg-icon-resource uninstall --mode user --context apps --size 256 tunedesk 2>/dev/null || true
    fi
    rm -f "$apps_dir/tunedesk.desktop" \
          "$icons_dir/256x256/apps/tunedesk.png" \
          "$icons_dir/scalable/apps/tunedesk.svg"
    refresh_caches
    echo "Removed the TuneDesk menu entry and icon from $data_home"
}

install() {
    for f in "$desktop_src" "$icon_png" "$icon_svg"; do
        [[ -f "$f" ]] || { echo "error: missing $f (run this script from a TuneDesk checkout)" >&2; exit 1; }
    done

    # The entry to install: the packaged one, with Exec made absolute when we can resolve it.
    tmp="$(mktemp -d)"
    trap 'rm -rf "$tmp"' EXIT
    entry="$tmp/tunedesk.desktop"
    cp "$desktop_src" "$entry"
    if exe="$(command -v tunedesk)"; then
        exe="$(readlink -f "$exe")"
        # Quote per the Desktop Entry spec if the path has spaces.
        case "$exe" in *" "*) exec_line="Exec=\"$exe\"" ;; *) exec_line="Exec=$exe" ;; esac
        sed -i "s|^Exec=.*|$exec_line|" "$entry"
        echo "Launcher will run: $exe"
    else
        echo "warning: 'tunedesk' is not on PATH; the menu entry runs plain 'tunedesk'." >&2
        echo "         Install TuneDesk (pip install .) or re-run this script from its environment." >&2
    fi

    # Icon: 256 px PNG through xdg-icon-resource, plus the SVG for scalable themes.
    if have xdg-icon-resource; then
        xdg-icon-resource install --mode user --noupdate --novendor --context apps --size 256 "$icon_png" tunedesk
        xdg-icon-resource forceupdate --mode user 2>/dev/null || true
    else
        mkdir -p "$icons_dir/256x256/apps"
        cp "$icon_png" "$icons_dir/256x256/apps/tunedesk.png"
    fi
    mkdir -p "$icons_dir/scalable/apps"
    cp "$icon_svg" "$icons_dir/scalable/apps/tunedesk.svg"

    # Menu entry.
    if have xdg-desktop-menu; then
        xdg-desktop-menu install --mode user --novendor "$entry"
    else
        mkdir -p "$apps_dir"
        cp "$entry" "$apps_dir/tunedesk.desktop"
        chmod 644 "$apps_dir/tunedesk.desktop"
    fi
    refresh_caches
    echo "Installed TuneDesk menu entry: $apps_dir/tunedesk.desktop"
    echo "Installed icon: $icons_dir/256x256/apps/tunedesk.png (+ scalable SVG)"
}

case "${1:-}" in
    ""|--install) install ;;
    --uninstall) uninstall ;;
    -h|--help) sed -n '2,11p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' ;;
    *) echo "usage: $0 [--install|--uninstall]" >&2; exit 2 ;;
esac
