"""Hyperparameters of one LoRA run: one typed definition for the CLI, the page and
``tunelab.json``.

Defaults are chosen for small LoRA runs (TRL's own defaults — learning rate 2e-5,
gradient checkpointing on, logging every 10 steps — are wrong for them). Each field's
description says the trade-off; ``__init__`` validation rejects bad combinations with
a message that names the setting.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

PREFERENCE_METHODS = ("dpo", "kto")  # rounds that continue from a parent adapter (docs/ratings.md)


class LoraSpec(BaseModel):
    """What peft's ``LoraConfig`` gets."""

    model_config = ConfigDict(extra="forbid")

    r: int = Field(8, ge=1, le=1024, description="LoRA rank; higher learns more and costs memory.")
    alpha: int = Field(16, ge=1, le=4096, description="LoRA alpha; the update is scaled by alpha / r.")
    dropout: float = Field(0.05, ge=0.0, lt=1.0, description="Dropout on the LoRA input; regularizes small data.")
    target_modules: list[str] | Literal["all-linear"] = Field(
        "all-linear",
        description="Modules to adapt: 'all-linear' or names such as q_proj, v_proj (or full "
        "module paths from the equalizer).",
    )
    rank_pattern: dict[str, int] = Field(default_factory=dict, description="Per-module rank overrides (peft rank_pattern).")
    alpha_pattern: dict[str, int] = Field(default_factory=dict, description="Per-module alpha overrides (peft alpha_pattern).")
    exclude_modules: list[str] | None = Field(None, description="Module names to leave untouched.")

    @model_validator(mode="after")
    def _check(self) -> "LoraSpec":
        if isinstance(self.target_modules, list) and not self.target_modules:
            raise ValueError("target_modules is empty: name at least one module, or use 'all-linear'.")
        bad = {k: v for k, v in self.rank_pattern.items() if v < 1}
        if bad:
            raise ValueError(f"rank_pattern has ranks below 1 ({bad}); leave a module out with exclude_modules instead.")
        return self

    def to_peft_kwargs(self) -> dict:
        kwargs = dict(
            r=self.r,
            lora_alpha=self.alpha,
            lora_dropout=self.dropout,
            target_modules=self.target_modules,
            rank_pattern=dict(self.rank_pattern),
            alpha_pattern=dict(self.alpha_pattern),
            task_type="CAUSAL_LM",
        )
        if self.exclude_modules:
            kwargs["exclude_modules"] = list(self.exclude_modules)
        return kwargs


class TrainSpec(BaseModel):
    """One training run's knobs besides LoRA's."""

    model_config = ConfigDict(extra="forbid")

    epochs: float = Field(3.0, gt=0, le=100, description="Passes over the training split; with early stopping the most it "
                          "trains. More fits tighter and risks overfitting.")
    early_stopping: bool = Field(True, description="Evaluate about once an epoch, keep the weights of the lowest held-out "
                                 "loss, and stop when it has not improved for `patience` evaluations.")
    patience: int = Field(2, ge=1, le=100, description="Evaluations without a better held-out loss before early stopping stops.")
    settled_loss: float | None = Field(None, ge=0.0, le=10.0, description="With early stopping, also stop once the "
                                       "held-out loss (nats per answer token) is at or below this: the held-out "
                                       "answers are learned. None: only patience, the budget and the ceiling stop.")
    time_budget_s: float | None = Field(None, gt=0, description="Stop after this many training seconds (evaluation "
                                        "excluded) and keep the best weights; None: no limit.")
    learning_rate: float = Field(2e-4, gt=0, le=1e-1, description="Step size; LoRA wants ~1e-4 to 5e-4 (TRL's 2e-5 default is for full fine-tuning).")
    batch_size: int = Field(8, ge=1, le=512, description="Examples per optimizer step; larger is faster per token and uses more memory.")
    max_length: int = Field(512, ge=16, le=131072, description="Tokens per example; longer examples are refused by the data doctor.")
    warmup_ratio: float = Field(0.03, ge=0.0, le=0.5, description="Share of steps with a rising learning rate, in "
                                "whole steps rounded down (a run of under 1/ratio steps has none).")
    weight_decay: float = Field(0.0, ge=0.0, le=1.0, description="AdamW weight decay.")
    seed: int = Field(42, description="Seed for initialization, shuffling and the split.")
    eval_fraction: float | None = Field(None, ge=0.0, lt=0.9, description="Share of examples held out to judge the run "
                                        "(eval loss, proof). None: the rule (20%, at least 20 rows where the data "
                                        "allows, at most 200); 0: none.")
    logging_steps: int = Field(1, ge=1, description="Report loss every N steps (TRL's default 10 hides short runs).")
    eval_steps: int | None = Field(None, ge=1, description="Evaluate every N steps; default: a few times per run.")
    save_steps: int | None = Field(None, ge=1, description="Checkpoint every N steps, for resume; default: about every 20% of the run.")
    neftune_noise_alpha: float | None = Field(None, ge=0.0, le=100.0, description="NEFTune: noise added to the input "
                                              "embeddings while training (5 is typical); helps small data generalize.")
    gradient_checkpointing: bool = Field(False, description="Trade compute for memory; off by default (small LoRA runs fit).")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="auto: bf16 where the hardware supports it (GPU, or a CPU with bf16 units), else fp32."
    )
    system_prompt: str | None = Field(None, description="Prepended as a system turn to examples that have none.")
    quantize: Literal["4bit", "8bit"] | None = Field(None, description="QLoRA: hold the frozen base in 4-bit NF4 "
                                                     "(or 8-bit) on a CUDA GPU so a bigger base fits; the adapter "
                                                     "still serves on the unquantized base. Needs CUDA.")
    processes: int = Field(1, ge=1, le=64, description="Training processes under accelerate launch (DDP), one per "
                           "GPU; batch_size is split between them. On CPU they share the cores (gloo).")
    beta: float = Field(0.1, gt=0, le=10, description="Preference rounds (DPO, KTO): how far the round may move from "
                        "the adapter it starts from; lower moves further (TRL's 0.1 is typical).")
    desirable_weight: float | None = Field(None, gt=0, le=100, description="KTO only: weight of the 👍 answers' loss. "
                                           "Unset: balanced from the counts (the rarer side weighs majority/minority, "
                                           "the other 1), as the KTO paper advises for unequal votes.")
    undesirable_weight: float | None = Field(None, gt=0, le=100, description="KTO only: weight of the 👎 answers' "
                                             "loss. Unset: balanced from the counts, like desirable_weight.")


class RunSpec(BaseModel):
    """Everything one adapter's training needs, as saved in ``tunelab.json``."""

    model_config = ConfigDict(extra="forbid")

    name: str
    base: str = "default"
    goal: str = ""
    lora: LoraSpec = Field(default_factory=LoraSpec)
    train: TrainSpec = Field(default_factory=TrainSpec)
    equalizer: dict | None = Field(None, description="The equalizer grid this LoRA config was compiled from, if any.")
    method: Literal["sft", "dpo", "kto"] = Field("sft", description="sft: learn from examples; dpo: a preference "
                                                 "round on prompt/chosen/rejected pairs; kto: one on single 👍/👎 votes "
                                                 "(prompt/completion/label); both continue from the adapter `parent`.")
    parent: str | None = Field(None, description="DPO and KTO: the adapter the round starts from (and its reference).")

    @model_validator(mode="after")
    def _check_method(self) -> "RunSpec":
        if self.method in PREFERENCE_METHODS and not self.parent:
            raise ValueError(f"method {self.method!r} continues from an adapter: name it as parent (--from NAME).")
        if self.method == "kto" and self.train.batch_size < 2:
            raise ValueError("method 'kto' needs batch_size 2 or more: it estimates its reference point from the other "
                             "answers of a batch (TRL refuses 1).")
        return self
