#!/usr/bin/env bash
# Run every check CI runs, from a fresh Debian machine with only python3 and apt:
#
#   1. system packages for headless napari (Xvfb, Mesa, xcb libs, ffmpeg, python3-venv) if missing
#   2. .venv with the CPU build of torch, then `pip install -e ".[pyqt5,testing,bench,dask]"`
#   3. ruff check
#   4. build the wheel; install it in a separate virtual environment (.venv-wheelcheck, rebuilt
#      from scratch whenever pyproject.toml changes) and run `npe2 validate --imports napari-sciz`
#      there, plus a check that the wheel ships the manifest and the sample data
#   5. the test suite under xvfb-run (arguments of this script are passed to pytest)
#
# Re-runs skip the installs already done. Any failure, including "no tests collected", fails.
#
# Usage: bash scripts/test.sh [PYTEST_ARGS...]
#        SCIZ_SKIP_WHEEL=1 bash scripts/test.sh   # skip step 4 (quick local runs)

# shellcheck source=scripts/_setup.sh
source "$(dirname "${BASH_SOURCE[0]}")/_setup.sh"

EXTRAS="pyqt5,testing,bench,dask"
WHEEL_VENV="${SCIZ_WHEEL_VENV:-$SCIZ_ROOT/.venv-wheelcheck}"
DIST_DIR="$SCIZ_ROOT/build/sciz-dist"

step() { log "==> $*"; }

step "system packages"
ensure_system_packages

step "virtual environment"
ensure_venv "$SCIZ_VENV" "$EXTRAS"
PY="$SCIZ_VENV/bin/python"

step "ruff check"
"$SCIZ_VENV/bin/ruff" check "$SCIZ_ROOT"

if [[ "${SCIZ_SKIP_WHEEL:-0}" != 1 ]]; then
    step "build the wheel"
    rm -rf "$DIST_DIR"
    "${NICE[@]}" "$PY" -m pip wheel -q --no-deps -w "$DIST_DIR" "$SCIZ_ROOT"
    wheels=("$DIST_DIR"/napari_sciz-*.whl)
    [[ -f "${wheels[0]}" ]] || die "no wheel built in $DIST_DIR"
    WHEEL="${wheels[0]}"
    log "built $(basename "$WHEEL")"

    step "npe2 validate against the wheel in $WHEEL_VENV"
    want="$(_install_stamp wheel "$("$PYTHON" -V 2>&1)")"
    stamp="$WHEEL_VENV/.sciz-install-stamp"
    if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$want" ]]; then
        log "creating a fresh $WHEEL_VENV"
        rm -rf "$WHEEL_VENV"
        "$PYTHON" -m venv "$WHEEL_VENV"
        "${NICE[@]}" "$WHEEL_VENV/bin/python" -m pip install -q --upgrade 'pip>=24'
        _pip_torch "$WHEEL_VENV/bin/python"
        # The wheel with its dependencies (pyqt5 extra: the widgets import qtpy and napari).
        "${NICE[@]}" "$WHEEL_VENV/bin/python" -m pip install -q "${WHEEL}[pyqt5]" npe2
        printf '%s\n' "$want" >"$stamp"
    fi
    # Always replace the package itself with the wheel just built.
    "$WHEEL_VENV/bin/python" -m pip install -q --no-deps --force-reinstall "$WHEEL"
    # Run from an empty folder so that the source tree cannot shadow the installed wheel.
    (
        cd "$(mktemp -d)"
        "$WHEEL_VENV/bin/python" - <<'EOF'
import sys
from importlib.resources import files

import napari_sciz
from napari_sciz._sample_data import SAMPLES, load_sample

assert "site-packages" in napari_sciz.__file__, napari_sciz.__file__
root = files("napari_sciz")
for name in ("napari.yaml", "samples/ATTRIBUTION.md"):
    assert root.joinpath(name).is_file(), f"{name} missing from the wheel"
for key in SAMPLES:
    print(f"  sample {key}: {load_sample(key).shape}")
assert "torch" not in sys.modules, "importing napari_sciz pulled in torch"
EOF
        "$WHEEL_VENV/bin/npe2" validate --imports napari-sciz
    )
fi

step "pytest (headless)"
# Keep the user's napari-sciz settings out of the tests.
NAPARI_SCIZ_CONFIG_DIR="$(mktemp -d)"
export NAPARI_SCIZ_CONFIG_DIR
run_headless "$PY" -m pytest -q "$@"
