"""Finished adapters into the serving endpoint: one the moment its weights are final (the
job runner's hand-off, while its proof still runs), and every finished one the endpoint
does not serve yet (at ``tunelab up``, and again after a supervised vLLM restarts).
A failed load never loses the adapter: its row says why, and its folder stays."""

from __future__ import annotations

from pathlib import Path

from backend import adapter_folder as adapter_files
from backend.errors import TuneLabError
from backend.names import adapter_path
from backend.serving.client import ServingClient
from backend.store import Store


def hand_over(client: ServingClient, store: Store, name: str, path: Path) -> bool:
    """Hot-swap adapter ``name`` from ``path`` into the endpoint (in place); True when it
    was loaded. An endpoint that is down or refuses it leaves the reason on the row."""
    try:
        client.load_adapter(name, str(path), inplace=True)
        return True
    except Exception as exc:  # the endpoint may be down; the adapter is safe on disk
        store.upsert_adapter(name, error=f"Trained, but not loaded into the endpoint: {exc}")
        return False


def load_missing(client: ServingClient, store: Store, adapters_dir: Path) -> list[str]:
    """Load every finished adapter the endpoint does not serve yet (e.g. trained by the CLI
    while no endpoint was up); returns the names loaded."""
    served = set(client.adapters())
    loaded = []
    for row in store.list_adapters(status="done"):
        folder = adapter_path(adapters_dir, row.name)
        if row.name in served or not adapter_files.is_complete(folder):
            continue
        try:
            client.load_adapter(row.name, str(folder))
            loaded.append(row.name)
        except TuneLabError as exc:  # e.g. trained for another base: say so, keep going
            store.upsert_adapter(row.name, error=f"Not loaded into the endpoint: {exc}")
    return loaded
