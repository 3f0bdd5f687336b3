"""Where data sets live on disk: the data directory and its overrides."""

from __future__ import annotations

import os
from pathlib import Path

from zoo.errors import ZooError

__all__ = ["DATA_DIR_ENV", "data_dir"]

DATA_DIR_ENV = "ZOO_DATA_DIR"


def data_dir(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The data root: ``explicit`` (``--data-dir``), else ``$ZOO_DATA_DIR``, else a per-user cache directory.

    A directory the user names must exist; the default one is created on demand.
    """
    for given, origin in ((explicit, "--data-dir"), (os.environ.get(DATA_DIR_ENV), f"${DATA_DIR_ENV}")):
        if given:
            path = Path(given).expanduser()
            if not path.is_dir():
                raise ZooError(f"data directory {str(path)!r} ({origin}) does not exist; create it or give another")
            return path
    import platformdirs

    return platformdirs.user_cache_path("zoo") / "data"
