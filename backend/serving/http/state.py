"""Which adapters the endpoint served, kept in a JSON file under the home
(``settings.paths.server_state``) so that a restarted endpoint loads them again."""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path

from backend.atomic import replace_file
from backend.errors import TuneLabError
from backend.names import inside_roots

log = logging.getLogger("tunelab.server")


def read_state(path: Path) -> dict[str, str]:
    """Adapters loaded before (name -> folder); empty when there is no readable state."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}
    adapters = data.get("adapters", {}) if isinstance(data, dict) else {}
    return {str(k): str(v) for k, v in adapters.items()} if isinstance(adapters, dict) else {}


def write_state(path: Path, base: str, adapters: dict[str, str]) -> None:
    """Write the state file whole (a crash never leaves half a file)."""
    state = {"base": base, "adapters": adapters, "saved_at": time.time()}
    replace_file(Path(path), json.dumps(state, indent=2, sort_keys=True) + "\n")


class SavedAdapters:
    """The state file of one app: saved after every load and unload, restored at start-up."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._lock = threading.Lock()

    def save(self, engine) -> None:
        with self._lock:
            write_state(self.path, engine.base_name, {n: i.path for n, i in engine.adapters().items()})

    def restore(self, engine, roots: list[Path]) -> None:
        """Load every adapter the file lists that the engine lacks; one that no longer loads, or
        lies outside ``roots`` (the folders load_lora_adapter accepts), is skipped with a warning
        (and dropped from the file)."""
        for name, path in read_state(self.path).items():
            if name in engine.adapters():
                continue
            try:
                engine.load_adapter(name, inside_roots(path, roots))
                log.info("restored adapter %s from %s", name, path)
            except TuneLabError as exc:
                log.warning("could not restore adapter %s from %s: %s", name, path, exc)
        self.save(engine)
