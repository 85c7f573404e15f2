"""Small persistent user settings of napari-sciz (Qt-free, torch-free).

Settings are stored as JSON in ``settings.json`` inside the user configuration folder of
napari-sciz: ``platformdirs.user_config_dir("napari-sciz")`` when platformdirs is installed (it is a
napari dependency), otherwise ``~/.config/napari-sciz``. The environment variable
``NAPARI_SCIZ_CONFIG_DIR`` overrides the folder (used by the tests).

The Compress widget stores the user's last target ratio with :func:`set_default_ratio`; the
File > Save writer (:mod:`napari_sciz._writer`) reads it with :func:`get_default_ratio`.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

__all__ = [
    "DEFAULT_RATIO",
    "config_dir",
    "get_default_ratio",
    "load_settings",
    "save_settings",
    "set_default_ratio",
    "settings_path",
]

#: Target compression ratio used by File > Save when the user never chose one.
DEFAULT_RATIO: float = 64.0

_APP_NAME = "napari-sciz"
_ENV_DIR = "NAPARI_SCIZ_CONFIG_DIR"
_FILE_NAME = "settings.json"


def config_dir() -> Path:
    """Return the folder that holds the settings file (it may not exist yet).

    Returns
    -------
    pathlib.Path
        ``$NAPARI_SCIZ_CONFIG_DIR`` if set, else the platformdirs user config folder of
        napari-sciz, else ``~/.config/napari-sciz``.
    """
    override = os.environ.get(_ENV_DIR)
    if override:
        return Path(override).expanduser()
    try:
        from platformdirs import user_config_dir
    except ImportError:  # pragma: no cover - platformdirs ships with napari
        return Path.home() / ".config" / _APP_NAME
    return Path(user_config_dir(_APP_NAME, appauthor=False))


def settings_path() -> Path:
    """Return the path of the JSON settings file.

    Returns
    -------
    pathlib.Path
        ``config_dir() / "settings.json"``.
    """
    return config_dir() / _FILE_NAME


def load_settings() -> dict[str, Any]:
    """Read all settings.

    A missing, unreadable or malformed file gives an empty dict: settings are a convenience and
    must never stop the plugin from working.

    Returns
    -------
    dict
        The stored settings.
    """
    try:
        data = json.loads(settings_path().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def save_settings(settings: dict[str, Any]) -> Path:
    """Write all settings atomically (temporary file + rename).

    Parameters
    ----------
    settings : dict
        JSON-serialisable settings; replaces the stored ones.

    Returns
    -------
    pathlib.Path
        The settings file written.
    """
    path = settings_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".settings-", suffix=".json", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(settings, fh, indent=2, sort_keys=True)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _valid_ratio(value: Any) -> float | None:
    try:
        ratio = float(value)
    except (TypeError, ValueError):
        return None
    if not math.isfinite(ratio) or ratio < 1.0:
        return None
    return ratio


def get_default_ratio() -> float:
    """Return the target ratio that File > Save uses.

    Returns
    -------
    float
        The ratio last stored with :func:`set_default_ratio`, or :data:`DEFAULT_RATIO` (64) when
        none is stored or the stored value is invalid.
    """
    ratio = _valid_ratio(load_settings().get("default_ratio"))
    return DEFAULT_RATIO if ratio is None else ratio


def set_default_ratio(ratio: float) -> None:
    """Store the target ratio that File > Save will use from now on.

    Parameters
    ----------
    ratio : float
        Target compression ratio (raw bytes / file bytes), at least 1.

    Raises
    ------
    ValueError
        If ``ratio`` is not a finite number >= 1.
    """
    value = _valid_ratio(ratio)
    if value is None:
        raise ValueError(f"ratio must be a finite number >= 1, got {ratio!r}")
    settings = load_settings()
    settings["default_ratio"] = value
    save_settings(settings)
