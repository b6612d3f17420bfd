"""Browser assets shipped inside Python packages, served like our own static files (WhiteNoise, collectstatic).

`PackageFileFinder` exposes single files (plotly.js, htmx) of installed packages under `vendor/<name>/`: only the
files listed in `PACKAGE_FILES`, never the rest of the package's folder. No asset is copied into the repository or
fetched from a CDN.
"""

import importlib.util
from pathlib import Path

from django.contrib.staticfiles.finders import BaseFinder
from django.core.files.storage import FileSystemStorage

__all__ = ("PACKAGE_FILES", "PackageFileFinder")

# static path prefix -> (package, folder inside the package, file names)
PACKAGE_FILES = {
    "vendor/plotly": ("plotly", "package_data", ("plotly.min.js",)),
    # htmx 2, shipped inside django-htmx (its {% htmx_script %} tag would need the whole app installed)
    "vendor/htmx": ("django_htmx", "static/django_htmx", ("htmx-2.min.js",)),
}


def _storages() -> list[tuple[str, FileSystemStorage, tuple[str, ...]]]:
    found = []
    for prefix, (package, folder, names) in PACKAGE_FILES.items():
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            continue
        storage = FileSystemStorage(location=Path(next(iter(spec.submodule_search_locations))) / folder)
        storage.prefix = prefix  # collectstatic puts the files under it
        found.append((prefix, storage, names))
    return found


class PackageFileFinder(BaseFinder):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.storages = _storages()

    def find(self, path, find_all=False, **kwargs):
        matches = []
        for prefix, storage, names in self.storages:
            name = path.removeprefix(prefix + "/")
            if name != path and name in names and storage.exists(name):
                if not (find_all or kwargs.get("all")):
                    return storage.path(name)
                matches.append(storage.path(name))
        return matches

    def list(self, ignore_patterns):
        for _prefix, storage, names in self.storages:
            for name in names:
                if storage.exists(name):
                    yield name, storage
