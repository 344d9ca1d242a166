"""The equalizer: a layers × module-kinds grid of LoRA rank (0 = off) and alpha.

A :class:`Grid` is plain data (JSON-able, stored in a run's ``hyperparameters.equalizer``).
:func:`compile_grid` turns it into a :class:`~backend.hparams.LoraSpec` that peft
understands, and :func:`grid_from_adapter` reads a grid back out of any LoRA adapter, so
the grid shown for an adapter is always what its files hold.

How a grid compiles (peft 0.21 semantics, verified in its source):

* ``target_modules`` — the module kinds with at least one cell on, as paths relative to a
  layer (``self_attn.q_proj``, GPT-2's ``mlp.c_proj``). peft matches a list entry when
  the module name equals it or ends with ``"." + entry``; the relative path keeps
  GPT-2's ``attn.c_proj`` and ``mlp.c_proj`` apart. (``layers_to_transform`` is not
  used: peft refuses it with a string ``target_modules``, and it cannot vary by kind.)
* ``exclude_modules`` — full module names of the cells set to 0 within targeted kinds,
  plus modules outside the layer stack that happen to end with a targeted kind (e.g. a
  vision tower). peft excludes a name when it equals an entry or ends with ``"." + entry``,
  so a full name excludes exactly that module.
* ``r`` / ``lora_alpha`` — the most common (rank, alpha) pair among the cells that are on.
* ``rank_pattern`` / ``alpha_pattern`` — the other cells, keyed ``"^" + full name``. peft
  looks a key up with ``re.match(rf"(.*\\.)?({key})$", name)``: the ``$`` it appends and
  the ``^`` we prepend pin the key to the whole name, so ``^model.layers.1.self_attn.q_proj``
  can never match ``model.layers.11.self_attn.q_proj`` (peft's docs use the same ``^`` form).

The grid and its compiling are plain data and need no model library; rebuilding a grid
from an adapter's weights (:mod:`backend.bases.adapter_grid`) does, and is reached from
:func:`grid_from_adapter` only when the adapter holds no stored grid.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Iterable

from pydantic import BaseModel, ConfigDict, Field, model_validator

from backend.adapter_folder import AdapterMeta, LoraConfigView
from backend.bases.module_kinds import LAYER_PATH, module_group
from backend.errors import ConfigError
from backend.hparams import LoraSpec

PRESETS = ("all-linear", "attention", "mlp", "top-half", "off")
RANKS = (0, 1024)  # a cell's rank: 0 switches it off
ALPHAS = (1, 4096)


class Grid(BaseModel):
    """Rank and alpha per layer (rows) and module kind (columns). Rank 0 = no adapter there.

    Setters return a new grid, so a page or CLI can keep an undo history by holding on
    to old ones.
    """

    model_config = ConfigDict(extra="forbid")

    layers: int = Field(..., ge=1, description="Number of layers (rows); row 0 is nearest the input.")
    modules: list[str] = Field(..., min_length=1, description="Module kinds (columns), paths relative to a layer.")
    rank: list[list[int]] = Field(..., description="rank[layer][module]; 0 switches the cell off.")
    alpha: list[list[int]] = Field(..., description="alpha[layer][module]; the update is scaled by alpha / rank.")

    @model_validator(mode="after")
    def _check(self) -> "Grid":
        problems = []
        if len(set(self.modules)) != len(self.modules):
            problems.append(f"modules has duplicates: {self.modules}")
        for name, table in (("rank", self.rank), ("alpha", self.alpha)):
            if len(table) != self.layers or any(len(row) != len(self.modules) for row in table):
                problems.append(f"{name} must be {self.layers} rows × {len(self.modules)} columns")
        if any(not RANKS[0] <= v <= RANKS[1] for row in self.rank for v in row):
            problems.append(f"ranks must be between {RANKS[0]} (off) and {RANKS[1]}")
        if any(not ALPHAS[0] <= v <= ALPHAS[1] for row in self.alpha for v in row):
            problems.append(f"alphas must be between {ALPHAS[0]} and {ALPHAS[1]}")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    # --- building ---------------------------------------------------------------------------

    @classmethod
    def filled(cls, layers: int, modules: list[str], r: int = 8, alpha: int = 16) -> "Grid":
        return cls(layers=layers, modules=list(modules), rank=[[r] * len(modules) for _ in range(layers)],
                   alpha=[[alpha] * len(modules) for _ in range(layers)])

    @classmethod
    def preset(cls, name: str, layers: int, modules: list[str], r: int = 8, alpha: int = 16,
               groups: dict[str, str] | None = None) -> "Grid":
        """A grid from a preset: 'all-linear' (every cell), 'attention' (attention kinds only),
        'mlp' (MLP kinds only), 'top-half' (every kind in the upper half of the layers), 'off'.

        ``groups`` maps a module kind to 'attention' / 'mlp' / 'other' (the inspector's
        ``module_kinds[*].group``); without it the kind's name decides.
        """
        if name not in PRESETS:
            raise ConfigError(f"Unknown equalizer preset {name!r}.", fix=f"Use one of: {', '.join(PRESETS)}.")
        groups = groups or {m: module_group(m) for m in modules}

        def on(layer: int, module: str) -> bool:
            if name == "all-linear":
                return True
            if name == "top-half":
                return layer >= layers // 2
            if name in ("attention", "mlp"):
                return groups.get(module) == name
            return False

        grid = cls.filled(layers, modules, r, alpha)
        rank = [[r if on(i, m) else 0 for m in modules] for i in range(layers)]
        if name in ("attention", "mlp") and not any(any(row) for row in rank):
            raise ConfigError(f"Preset {name!r} selects no module: none of {modules} looks like {name}.",
                              fix="Switch the columns on by hand, or use 'all-linear'.")
        return grid.model_copy(update={"rank": rank})

    @classmethod
    def from_report(cls, report: dict, preset: str = "all-linear", r: int = 8, alpha: int = 16) -> "Grid":
        """A preset grid for a base, from :func:`backend.bases.inspect.inspect_base`'s report."""
        kinds = report["module_kinds"]
        return cls.preset(preset, report["num_layers"], [k["name"] for k in kinds], r, alpha,
                          groups={k["name"]: k["group"] for k in kinds})

    # --- setters (each returns a new grid) ------------------------------------------------------

    def _column(self, module: str | int) -> int:
        if isinstance(module, int):
            if not 0 <= module < len(self.modules):
                raise ConfigError(f"Column {module} is outside the grid (0..{len(self.modules) - 1}).")
            return module
        if module in self.modules:
            return self.modules.index(module)
        short = [i for i, m in enumerate(self.modules) if m.split(".")[-1] == module]
        if len(short) == 1:
            return short[0]
        raise ConfigError(f"Module kind {module!r} is not a column of the grid.",
                          fix=f"Columns: {', '.join(self.modules)}.")

    def _row(self, layer: int) -> int:
        if not 0 <= layer < self.layers:
            raise ConfigError(f"Layer {layer} is outside the grid (0..{self.layers - 1}).")
        return layer

    def _set(self, cells: Iterable[tuple[int, int]], rank: int | None, alpha: int | None) -> "Grid":
        ranks = [list(row) for row in self.rank]
        alphas = [list(row) for row in self.alpha]
        for i, j in cells:
            if rank is not None:
                ranks[i][j] = rank
            if alpha is not None:
                alphas[i][j] = alpha
        return Grid(layers=self.layers, modules=list(self.modules), rank=ranks, alpha=alphas)

    def set_cell(self, layer: int, module: str | int, rank: int | None = None, alpha: int | None = None) -> "Grid":
        return self._set([(self._row(layer), self._column(module))], rank, alpha)

    def set_row(self, layer: int, rank: int | None = None, alpha: int | None = None) -> "Grid":
        i = self._row(layer)
        return self._set([(i, j) for j in range(len(self.modules))], rank, alpha)

    def set_column(self, module: str | int, rank: int | None = None, alpha: int | None = None) -> "Grid":
        j = self._column(module)
        return self._set([(i, j) for i in range(self.layers)], rank, alpha)

    def set_all(self, rank: int | None = None, alpha: int | None = None) -> "Grid":
        return self._set([(i, j) for i in range(self.layers) for j in range(len(self.modules))], rank, alpha)

    # --- views ------------------------------------------------------------------------------------

    def on_cells(self) -> list[tuple[int, str, int, int]]:
        """(layer, module, rank, alpha) of every cell that is on."""
        return [(i, m, self.rank[i][j], self.alpha[i][j])
                for i in range(self.layers) for j, m in enumerate(self.modules) if self.rank[i][j] > 0]

    def to_dict(self) -> dict:
        return self.model_dump()

    def heatmap(self, value: str = "rank") -> dict[str, list]:
        """``{"layers", "modules", "values"}`` for 'rank' or 'alpha' (alpha shown as 0 where off)."""
        if value not in ("rank", "alpha"):
            raise ConfigError(f"Unknown grid heatmap value {value!r}.", fix="Use 'rank' or 'alpha'.")
        values = self.rank if value == "rank" else [
            [a if r else 0 for r, a in zip(rr, ar)] for rr, ar in zip(self.rank, self.alpha)]
        return {"layers": [str(i) for i in range(self.layers)], "modules": list(self.modules),
                "values": [list(row) for row in values]}


# --- compiling -------------------------------------------------------------------------------------


def _cell_paths(grid_modules: list[str], module_paths: Iterable[str]) -> tuple[str, dict[tuple[int, str], str]]:
    """The layer-stack prefix and the full name of each (layer, kind) cell."""
    candidates: dict[str, dict[tuple[int, str], str]] = {}
    kinds = set(grid_modules)
    for path in module_paths:
        match = LAYER_PATH.match(path)
        if match and match["kind"] in kinds:
            candidates.setdefault(match["prefix"], {})[(int(match["index"]), match["kind"])] = path
    if not candidates:
        raise ConfigError(
            f"None of the grid's module kinds ({', '.join(grid_modules)}) occurs in the base's modules.",
            fix="Build the grid from this base's inspector report (Grid.from_report).",
        )
    prefix = max(candidates, key=lambda p: len(candidates[p]))
    return prefix, candidates[prefix]


def compile_grid(grid: Grid, module_paths: Iterable[str], dropout: float | None = None) -> LoraSpec:
    """The :class:`LoraSpec` that makes peft build exactly ``grid`` (see module docstring).

    ``module_paths``: the base's module names (``report["module_paths"]`` from the
    inspector, or ``[n for n, _ in model.named_modules()]``).
    """
    module_paths = list(module_paths)
    prefix, cells = _cell_paths(grid.modules, module_paths)
    on = grid.on_cells()
    if not on:
        raise ConfigError("Every cell of the equalizer is off (rank 0), so there is nothing to train.",
                          fix="Switch some cells on, or pick a preset such as 'attention'.")
    missing = [f"layer {i} {m}" for i, m, _, _ in on if (i, m) not in cells]
    if missing:
        raise ConfigError(
            f"The grid switches on cells this base does not have: {', '.join(missing[:8])}"
            f"{' …' if len(missing) > 8 else ''}.",
            fix="Build the grid from this base's inspector report (Grid.from_report).",
        )
    default_r, default_alpha = Counter((r, a) for _, _, r, a in on).most_common(1)[0][0]
    targeted = [m for m in grid.modules if any(cm == m for _, cm, _, _ in on)]
    on_paths = {cells[(i, m)] for i, m, _, _ in on}
    exclude = [path for path in module_paths
               if any(path == k or path.endswith("." + k) for k in targeted) and path not in on_paths]
    rank_pattern = {f"^{cells[(i, m)]}": r for i, m, r, _ in on if r != default_r}
    alpha_pattern = {f"^{cells[(i, m)]}": a for i, m, _, a in on if a != default_alpha}
    kwargs = dict(r=default_r, alpha=default_alpha, target_modules=targeted, rank_pattern=rank_pattern,
                  alpha_pattern=alpha_pattern, exclude_modules=exclude or None)
    if dropout is not None:
        kwargs["dropout"] = dropout
    return LoraSpec(**kwargs)


# --- reading a grid back ------------------------------------------------------------------------------


def grid_from_adapter(adapter_folder: Path, modules: list[str] | None = None,
                      layers: int | None = None) -> Grid:
    """The equalizer grid of any LoRA adapter.

    From ``tunelab.json``'s ``hyperparameters.equalizer`` (or ``equalizer``) when
    TuneLab stored one; else rebuilt from the adapter's files
    (:func:`backend.bases.adapter_grid.tables_from_files`), with the base's columns and
    rows where its config.json is on this machine, or ``modules`` / ``layers``.
    """
    folder = Path(adapter_folder)
    config = LoraConfigView.of(folder)
    meta = AdapterMeta.of(folder)
    if meta.equalizer_grid:
        return Grid.model_validate(meta.equalizer_grid)
    from backend.bases import adapter_grid  # the lazy seam: the weights are read with safetensors and peft

    return Grid(**adapter_grid.tables_from_files(folder, config, meta, modules=modules, layers=layers))
