#!/usr/bin/env bash
# Install the system libraries napari needs to draw under a virtual X server (Debian/Ubuntu).
# Does nothing when Xvfb is already there; needs root or sudo otherwise.
set -euo pipefail
if command -v Xvfb >/dev/null 2>&1; then
    exit 0
fi
packages=(xvfb libxcb-icccm4 libxcb-keysyms1 libxcb-xinerama0 libxcb-cursor0 libxcb-shape0
          libxcb-randr0 libxcb-render-util0 libxkbcommon-x11-0 libegl1 libgl1 libfontconfig1 libdbus-1-3)
if [ "$(id -u)" = 0 ]; then
    sudo=()
elif command -v sudo >/dev/null 2>&1; then
    sudo=(sudo)
else
    echo "[system] Xvfb is missing and this user cannot install it; run: apt-get install -y ${packages[*]}" >&2
    exit 1
fi
echo "[system] installing ${packages[*]}"
"${sudo[@]}" apt-get update -qq
DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq "${packages[@]}" >/dev/null
