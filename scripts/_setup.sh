# shellcheck shell=bash
# Shared set-up for scripts/demo.sh and scripts/test.sh. Source it, do not run it.
#
# What it provides:
#   ensure_system_packages  apt-get installs what napari needs headless (Xvfb, Mesa GL, xcb libs),
#                           ffmpeg and python3-venv, only the ones missing (sudo only if not root)
#   ensure_venv DIR EXTRAS  creates DIR with python3 -m venv if missing, installs the pinned CPU
#                           torch first, then `pip install -e ".[EXTRAS]"`; skipped on re-runs while
#                           pyproject.toml, the torch pin and the extras are unchanged
#   run_headless CMD...     runs CMD under `xvfb-run -a` (or directly when xvfb-run is absent)
#
# Environment knobs:
#   PYTHON                  interpreter used to create virtual environments (default python3)
#   SCIZ_VENV               main virtual environment (default .venv in the repository root)
#   SCIZ_TORCH_SPEC         torch requirement installed first (default torch==2.13.0)
#   SCIZ_TORCH_INDEX_URL    extra index for torch, e.g. https://download.pytorch.org/whl/cpu
#                           (plain PyPI serves a multi-GB CUDA build of torch on Linux)
#   SCIZ_SKIP_APT=1         never call apt-get
#   PIP_NO_CACHE_DIR        pip keeps no copy of what it downloads (default 1: a fresh CI
#                           machine's disk holds the environment, not a second torch)

set -euo pipefail

SCIZ_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$SCIZ_ROOT"

PYTHON="${PYTHON:-python3}"
SCIZ_VENV="${SCIZ_VENV:-$SCIZ_ROOT/.venv}"
SCIZ_TORCH_SPEC="${SCIZ_TORCH_SPEC:-torch==2.13.0}"
SCIZ_TORCH_INDEX_URL="${SCIZ_TORCH_INDEX_URL:-}"
export PIP_NO_CACHE_DIR="${PIP_NO_CACHE_DIR:-1}"

SCIZ_APT_PACKAGES=(
    xvfb libgl1-mesa-dri libglx-mesa0 libdbus-1-3 libxkbcommon-x11-0 libxcb-icccm4 libxcb-image0
    libxcb-keysyms1 libxcb-randr0 libxcb-render-util0 libxcb-xinerama0 libxcb-xfixes0
    libxcb-shape0 libxcb-cursor0 ffmpeg
)

# Heavy steps yield the CPU to other work on shared machines.
if command -v nice >/dev/null 2>&1; then NICE=(nice -n 10); else NICE=(); fi

log() { printf '[sciz] %s\n' "$*" >&2; }
die() { printf '[sciz] error: %s\n' "$*" >&2; exit 1; }

ensure_system_packages() {
    local missing=() pkg
    command -v "$PYTHON" >/dev/null 2>&1 || die "$PYTHON not found; install Python >= 3.10"
    "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))' \
        || die "$PYTHON is $("$PYTHON" -V 2>&1); napari-sciz needs Python >= 3.10"
    if [[ "${SCIZ_SKIP_APT:-0}" == 1 ]] || ! command -v dpkg-query >/dev/null 2>&1; then
        return 0
    fi
    for pkg in "${SCIZ_APT_PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' \
            || missing+=("$pkg")
    done
    # Debian ships `venv` without ensurepip unless python3-venv is installed.
    "$PYTHON" -c 'import ensurepip, venv' >/dev/null 2>&1 || missing+=(python3-venv)
    ((${#missing[@]})) || return 0

    command -v apt-get >/dev/null 2>&1 || die "missing system packages: ${missing[*]}"
    local sudo=()
    if [[ "$(id -u)" != 0 ]]; then
        command -v sudo >/dev/null 2>&1 || die "run as root or install sudo (missing: ${missing[*]})"
        sudo=(sudo)
    fi
    log "installing system packages: ${missing[*]}"
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

# _pyproject_deps: the parts of pyproject.toml that decide what gets installed (the whole file
# where tomllib is missing), so that editing e.g. the ruff settings does not force a reinstall.
_pyproject_deps() {
    "$PYTHON" - "$SCIZ_ROOT/pyproject.toml" <<'EOF' 2>/dev/null || cat "$SCIZ_ROOT/pyproject.toml"
import json, sys, tomllib
with open(sys.argv[1], "rb") as fh:
    data = tomllib.load(fh)
project = data.get("project", {})
keys = ("dependencies", "optional-dependencies", "requires-python", "scripts", "entry-points")
print(json.dumps([data.get("build-system"), {k: project.get(k) for k in keys}], sort_keys=True))
EOF
}

# _install_stamp EXTRA...: fingerprint of what decides a virtual environment's contents.
_install_stamp() {
    { _pyproject_deps; printf '%s\n' "$SCIZ_TORCH_SPEC" "$SCIZ_TORCH_INDEX_URL" "$@"; } \
        | sha256sum | cut -d' ' -f1
}

# _pip_torch PY: install the pinned torch (CPU build) before anything can pull another one.
_pip_torch() {
    local index=()
    [[ -n "$SCIZ_TORCH_INDEX_URL" ]] && index=(--extra-index-url "$SCIZ_TORCH_INDEX_URL")
    "${NICE[@]}" "$1" -m pip install -q "${index[@]}" "$SCIZ_TORCH_SPEC"
}

# ensure_venv DIR EXTRAS: editable install of this repository with EXTRAS into DIR.
ensure_venv() {
    local venv="$1" extras="$2" stamp want
    local py="$venv/bin/python"
    if [[ ! -x "$py" ]]; then
        log "creating virtual environment $venv"
        "$PYTHON" -m venv "$venv"
    fi
    stamp="$venv/.sciz-install-stamp"
    want="$(_install_stamp editable "$extras" "$("$py" -V 2>&1)")"
    if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]] \
        && "$py" -c 'import napari_sciz, torch' >/dev/null 2>&1; then
        log "$venv is up to date (delete $stamp to force a reinstall)"
        return 0
    fi
    log "installing napari-sciz[$extras] into $venv (torch first: $SCIZ_TORCH_SPEC)"
    "${NICE[@]}" "$py" -m pip install -q --upgrade 'pip>=24'
    _pip_torch "$py"
    "${NICE[@]}" "$py" -m pip install -q -e "$SCIZ_ROOT[$extras]"
    printf '%s\n' "$want" >"$stamp"
}

# run_headless CMD...: run a Qt program without a screen (a virtual X server per call).
run_headless() {
    if command -v xvfb-run >/dev/null 2>&1; then
        xvfb-run -a -s '-screen 0 1600x1200x24' "$@"
    else
        log "xvfb-run not found: running without a virtual display"
        "$@"
    fi
}
