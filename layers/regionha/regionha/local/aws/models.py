"""botocore's service models parsed once per process, for the processes that emulate AWS.

Every new botocore session has its own loader, which re-reads and re-parses the same static JSON
files (a tenth of a second of CPU per service model): the moto server parses a model per request
class, and every test or handler session parses the models of the clients it creates. On Lambda a
function's process reads them once per execution environment; in one process holding the whole
twin (or a test run) they would be parsed again and again. botocore never mutates what it loads.
"""

from __future__ import annotations

import threading
from typing import Any

_lock = threading.Lock()


def share_botocore_models() -> None:
    """Make every botocore loader of this process share one parsed copy of each JSON file; idempotent."""
    from botocore.loaders import JSONFileLoader

    with _lock:
        if getattr(JSONFileLoader.load_file, "shared", False):
            return
        load, parsed = JSONFileLoader.load_file, {}

        def load_file(self: JSONFileLoader, file_path: str) -> Any:
            if file_path not in parsed:
                parsed[file_path] = load(self, file_path)
            return parsed[file_path]

        load_file.shared = True  # type: ignore[attr-defined]
        JSONFileLoader.load_file = load_file  # type: ignore[method-assign]
