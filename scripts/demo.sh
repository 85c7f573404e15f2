#!/usr/bin/env bash
# Set up napari-sciz and run its demo, from a fresh Debian machine with only python3 and apt:
#
#   1. system packages for napari (Xvfb, Mesa, xcb libs, ffmpeg, python3-venv) if missing
#   2. .venv with the CPU build of torch, then `pip install -e ".[pyqt5,testing,bench,dask]"`
#   3. `sciz demo`: with a display (DISPLAY or WAYLAND_DISPLAY set) it opens napari with the demo;
#      without one it runs headless under xvfb-run and saves a screenshot (default
#      demo_out/side_by_side.png, or the path given with --screenshot)
#
# Re-runs skip the installs already done. Arguments are passed on to `sciz demo`.
#
# Usage: bash scripts/demo.sh [SCIZ_DEMO_ARGS...]

# shellcheck source=scripts/_setup.sh
source "$(dirname "${BASH_SOURCE[0]}")/_setup.sh"

ensure_system_packages
ensure_venv "$SCIZ_VENV" "pyqt5,testing,bench,dask"

SCIZ="$SCIZ_VENV/bin/sciz"
args=("$@")
if [[ -n "${DISPLAY:-}${WAYLAND_DISPLAY:-}" ]]; then
    log "running: sciz demo ${args[*]}"
    exec "$SCIZ" demo "${args[@]}"
fi

has_screenshot=0
for arg in "${args[@]}"; do
    [[ "$arg" == --screenshot || "$arg" == --screenshot=* ]] && has_screenshot=1
done
if ((!has_screenshot)); then
    mkdir -p "$SCIZ_ROOT/demo_out"
    args+=(--screenshot "$SCIZ_ROOT/demo_out/side_by_side.png")
fi
log "no display: running headless under xvfb-run: sciz demo ${args[*]}"
run_headless "$SCIZ" demo "${args[@]}"
