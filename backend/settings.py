"""Typed settings. One ``TUNELAB_HOME`` owns every path TuneLab writes.

Every value can be set from the environment with the ``TUNELAB_`` prefix
(``TUNELAB_HOME=/tmp/x``); this is the only module that reads ``TUNELAB_*`` variables,
and only the entry points (``backend/cli.py``, ``backend/training/worker.py``) build
:class:`Settings` from them: everything else is handed one. Nothing here touches the
disk: :class:`Paths` only computes locations; callers create what they need
(``Paths.ensure()``). docs/settings.md explains each field.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from backend.errors import ConfigError
from backend.names import lies_inside

LOOPBACK_HOSTS = ("127.0.0.1", "::1", "localhost")

PACKAGE_ROOT = Path(__file__).resolve().parent
PROJECT_ROOT = PACKAGE_ROOT.parent  # a checkout's folder; site-packages when installed as a package
USER_HOME = Path("~") / ".tunelab"


def default_home(package_root: Path = PACKAGE_ROOT) -> Path:
    """The home when ``TUNELAB_HOME`` is not set: the project folder of a checkout (the
    folder above the package holds ``pyproject.toml``), else ``~/.tunelab``, so that a
    TuneLab installed as a package never writes into site-packages."""
    project = package_root.parent
    if (project / "pyproject.toml").is_file():
        return project
    return USER_HOME.expanduser()


class Settings(BaseSettings):
    """TuneLab's configuration, read from ``TUNELAB_*`` environment variables."""

    model_config = SettingsConfigDict(env_prefix="TUNELAB_", extra="ignore")

    home: Path = Field(
        default_factory=default_home,
        description="Folder that owns every path TuneLab writes: database, model cache, "
        "adapters/, datasets/uploads/, runs/. Default: the project folder of a checkout; "
        "~/.tunelab for a TuneLab installed as a package.",
    )
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL of the store. Default: a SQLite file in the home. "
        "A Postgres URL works the same.",
    )
    default_base: str = Field(
        default="default",
        description="Base used when none is named: 'default' (SmolLM2-135M-Instruct, offline), "
        "a hub id, a local folder or a .gguf file.",
    )
    api_token: str | None = Field(
        default=None,
        description="Bearer token for the serving endpoint's adapter management. "
        "When unset, one is generated once and stored in the home.",
    )
    server_url: str | None = Field(
        default=None,
        description="URL of an external serving endpoint (e.g. vLLM with --enable-lora). "
        "When unset, TuneLab uses its embedded server.",
    )
    host: str = Field(default="127.0.0.1", description="Address the server and page bind to.")
    port: int = Field(default=8000, description="Port of the serving endpoint.")
    max_body_mb: float = Field(
        default=32, gt=0, allow_inf_nan=False,
        description="Largest request body the serving endpoint reads, in MB (1 MB = 1024 * 1024 bytes); "
        "a larger one is answered 413 without being read whole.",
    )
    ui_port: int = Field(default=7860, description="Port of the Gradio page.")
    auth: str | None = Field(
        default=None, description="Optional 'user:password' login for the page. Required to bind the "
        "page beyond loopback (a host other than 127.0.0.1, ::1, localhost) unless insecure_no_auth is set.",
    )
    insecure_no_auth: bool = Field(
        default=False,
        description="Allow binding beyond loopback with no login (the page without TUNELAB_AUTH; "
        "`tunelab serve`, whose chat routes have no login, at all). Same as --insecure-no-auth. "
        "Anyone who reaches the port can then use the page's functions or the chat routes.",
    )
    export_roots: Annotated[list[Path], NoDecode] = Field(
        default_factory=list,
        description="Folders, besides the home, into which the page and the assistant may export "
        "adapters (a JSON list or paths separated by ':'); any other destination (symlinks resolved "
        "first) is refused. `tunelab adapters export` at a terminal writes anywhere.",
    )
    data_roots: Annotated[list[Path], NoDecode] = Field(
        default_factory=list,
        description="Folders, besides the home (where the page's uploads land) and the shipped samples, "
        "from which the page and the assistant may read example files (a JSON list or paths separated by "
        "':'); any other file (symlinks resolved first) is refused unread. `tunelab data check` and "
        "`tunelab train --data` at a terminal read anywhere.",
    )
    max_upload_mb: float = Field(
        default=100, gt=0, allow_inf_nan=False,
        description="Largest file the page accepts in one upload, in MB (1 MB = 1024 * 1024 bytes); "
        "a larger one is refused by the upload itself, before it is written.",
    )
    login_free_tries: int = Field(
        default=3, ge=1,
        description="Failed page logins (in 15 minutes) answered at once; each later attempt waits "
        "1, 2, 4 ... up to 30 s, one at a time, until a login succeeds.",
    )
    assistant_url: str | None = Field(
        default=None,
        description="OpenAI-compatible URL (ending in /v1) of a capable chat model that drives the "
        "assistant as a tool-calling agent. Unset: the built-in rule-based assistant answers.",
    )
    assistant_model: str | None = Field(
        default=None, description="Model name to ask at TUNELAB_ASSISTANT_URL (e.g. gpt-4o-mini)."
    )
    assistant_api_key: str | None = Field(
        default=None, description="API key for TUNELAB_ASSISTANT_URL, if it needs one."
    )
    models_dir: Path | None = Field(
        default=None,
        description="Model cache (converted default base, GGUF conversions). Default: <home>/.tunelab/models. "
        "Set it to share one cache between homes, e.g. in the Docker image.",
    )
    serve_dtype: str = Field(
        default="auto",
        description="Weights dtype of the serving endpoint's base: 'auto' (bf16 where the CPU has bf16 "
        "units or the GPU supports it, else fp32), 'bf16' or 'fp32'. Greedy output equals plain peft "
        "loaded in the same dtype.",
    )
    serve_prepack: bool = Field(
        default=True,
        description="Pack the serving base's bf16 Linear weights once for oneDNN on CPU (same numbers, "
        "faster decode steps; docs/performance.md) at the cost of a second copy of those weights in memory. "
        "Set false to save the memory.",
    )
    serve_kv_cache: str = Field(
        default="auto",
        description="How the serving engine holds a batch's keys and values: 'auto' (preallocated blocks written "
        "in place on a GPU; transformers' cache on a CPU, where the blocks measured no faster: docs/performance.md), "
        "'preallocated', or 'dynamic' (transformers' cache, which concatenates every step). Greedy output is the "
        "same either way.",
    )
    native_kernels: bool = Field(
        default=True,
        description="CPU training builds (once per machine, with the system's C compiler) and uses the native "
        "kernels of backend/training/cpu/kernels.c; false runs the same maths as torch ops.",
    )
    trust_remote_code: bool = Field(
        default=False,
        description="Allow bases whose architecture needs trust_remote_code (runs their code).",
    )
    max_line_kb: int = Field(
        default=1024, ge=1,
        description="The data doctor refuses a line of an uploaded file longer than this many KB "
        "(1 KB = 1024 bytes) at once, unread and untokenized (docs/data.md).",
    )
    adapter_roots: Annotated[list[Path], NoDecode] = Field(
        default_factory=list,
        description="Folders, besides <home>/adapters, whose adapters the serving endpoint's "
        "load_lora_adapter accepts (a JSON list or paths separated by ':'). A lora_path anywhere "
        "else (symlinks resolved first) is refused.",
    )

    @field_validator("adapter_roots", "export_roots", "data_roots", mode="before")
    @classmethod
    def _roots_from_text(cls, value):
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [part for part in text.split(os.pathsep) if part.strip()]
        return value

    def check_open_bind(self, host: str | None, *, login: bool, what: str) -> None:
        """Refuse, before anything binds, to serve beyond loopback with no login.

        ``login`` says whether what binds asks for one (the page with TUNELAB_AUTH set),
        ``what`` names what has none; insecure_no_auth (``--insecure-no-auth``) lets it through.
        """
        host = (host or self.host).strip()
        if login or self.insecure_no_auth or host.strip("[]").lower() in LOOPBACK_HOSTS:
            return
        raise ConfigError(
            f"Refusing to bind host {host!r}: {what}, so anyone who can reach this address could use it.",
            fix="Set TUNELAB_AUTH=user:password (for the page), bind 127.0.0.1 (--host 127.0.0.1), or pass "
            "--insecure-no-auth (TUNELAB_INSECURE_NO_AUTH=1) to accept that risk. Nothing was started.")

    def export_destination(self, dest: str | Path) -> Path:
        """``dest`` when it resolves (symlinks followed) inside the home or a folder of
        export_roots; else a refusal that names the allowed folders."""
        path = Path(dest).expanduser()
        roots = self._roots(self.export_roots)
        if lies_inside(path, roots):
            return path
        allowed = ", ".join(str(r) for r in roots)
        raise ConfigError(f"Export folder {str(dest)!r} is outside the folders the page may write: {allowed}.",
                          fix="Choose a folder inside one of them, add its parent to TUNELAB_EXPORT_ROOTS, "
                          "or run `tunelab adapters export` at a terminal. Nothing was written.")

    def data_source(self, given: str | Path, *also: Path) -> Path:
        """``given`` when it resolves (symlinks followed) inside the home, a folder of
        data_roots or one of ``also`` (the shipped samples); else a refusal that says nothing
        of the file (not whether it exists), so the page cannot be used to probe the disk."""
        path = Path(given).expanduser()
        roots = self._roots(self.data_roots) + list(also)
        if lies_inside(path, roots):
            return path
        raise ConfigError(f"{str(given)!r} is outside the folders the page reads example files from "
                          f"(the home {self.paths.home} and TUNELAB_DATA_ROOTS).",
                          fix="Drop the file onto the page (uploads land in the home), add its folder to "
                          "TUNELAB_DATA_ROOTS, or check it at a terminal with `tunelab data check`. "
                          "Nothing was read.")

    def _roots(self, extra: list[Path]) -> list[Path]:
        return [self.paths.home] + [Path(r).expanduser().resolve() for r in extra]

    @property
    def paths(self) -> "Paths":
        models = self.models_dir.expanduser().resolve() if self.models_dir else None
        return Paths(self.home.expanduser().resolve(), models=models)

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.paths.database}"


class Paths:
    """Every location under the home, in one place."""

    def __init__(self, home: Path, models: Path | None = None):
        self.home = home
        self._models = models

    @property
    def adapters(self) -> Path:
        return self.home / "adapters"

    @property
    def datasets(self) -> Path:
        return self.home / "datasets"

    @property
    def uploads(self) -> Path:
        return self.home / "datasets" / "uploads"

    @property
    def page_uploads(self) -> Path:
        """Where the page's file drops land (Gradio's upload folder), inside the home rather than
        the machine-wide /tmp/gradio: imports copy from here into :attr:`uploads`."""
        return self.home / ".tunelab" / "page-uploads"

    @property
    def models(self) -> Path:
        """Model cache: converted default base, downloaded packages."""
        return self._models or self.home / ".tunelab" / "models"

    @property
    def runs(self) -> Path:
        """Per-job working folders: checkpoints, logs, the job's request."""
        return self.home / ".tunelab" / "runs"

    @property
    def native(self) -> Path:
        """Compiled CPU training kernels (backend/training/cpu/native.py), one folder per source + CPU."""
        return self.home / ".tunelab" / "native"

    @property
    def database(self) -> Path:
        return self.home / ".tunelab" / "tunelab.db"

    @property
    def api_token_file(self) -> Path:
        return self.home / ".tunelab" / "api_token"

    @property
    def server_state(self) -> Path:
        """The adapters the serving endpoint served, loaded again when it restarts."""
        return self.home / ".tunelab" / "server_state.json"

    @property
    def training_speed(self) -> Path:
        """This machine's measured training speed per base (backend/training/estimate.py):
        what the plan card's time estimate is made from."""
        return self.home / ".tunelab" / "speed.json"

    @property
    def serving_busy(self) -> Path:
        """A flag file that exists while the serving engine is generating: a training run on
        the same CPU yields its cores meanwhile (backend/hardware/threads.py)."""
        return self.home / ".tunelab" / "serving-busy"

    def run_dir(self, job_id: int) -> Path:
        return self.runs / f"job-{job_id:06d}"

    def ensure(self) -> "Paths":
        for folder in (self.adapters, self.uploads, self.models, self.runs):
            folder.mkdir(parents=True, exist_ok=True)
        return self
