"""The inspector's report as people see it: text for ``tunelab inspect``, heatmap data for
the page, human units. Plain functions of the JSON-able report; nothing here loads a model.
"""

from __future__ import annotations

from backend.errors import ConfigError


def public(report: dict) -> dict:
    """The report without private helpers (keys starting with '_'), safe for JSON."""
    return {k: v for k, v in report.items() if not k.startswith("_")}


def heatmap(report: dict, value: str = "params") -> dict[str, list]:
    """Heatmap data: ``{"layers": [...], "modules": [...], "values": [[...]]}``.

    ``value``: 'params' (base parameters per cell), 'lora_params' (LoRA parameters the
    configuration trains there), 'rank' or 'alpha'. Rows are layers (0 = nearest the
    input), columns are module kinds; a cell a layer does not have is None.
    """
    sources = {
        "params": report["cells"],
        "lora_params": report["lora"]["params"],
        "rank": report["lora"]["ranks"],
        "alpha": report["lora"]["alphas"],
    }
    if value not in sources:
        raise ConfigError(f"Unknown heatmap value {value!r}.", fix=f"Use one of: {', '.join(sources)}.")
    values = [list(row) for row in sources[value]]
    if value != "params":  # cells the base lacks stay None in every view
        values = [[None if base is None else v for base, v in zip(base_row, row)]
                  for base_row, row in zip(report["cells"], values)]
    return {"layers": [str(i) for i in range(report["num_layers"])],
            "modules": [k["name"] for k in report["module_kinds"]],
            "values": values}


def human_bytes(count: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(count) < 1024 or unit == "TB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} TB"


def human_count(count: int) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if count >= size:
            return f"{count / size:.2f}{unit}"
    return str(count)


def render_text(report: dict) -> str:
    """The report as text for ``tunelab inspect``."""
    base = report.get("base") or {}
    lines = [
        f"Base          {base.get('name') or report['model_type']}  ({report['architecture']})",
        f"Layers        {report['num_layers']} × hidden {report['hidden_size']}"
        f" (MLP {report['intermediate_size']}, heads {report['num_attention_heads']}/{report['num_key_value_heads']} kv)",
        f"Context       {report['context_length']} tokens, vocab {report['vocab_size']}",
        f"Parameters    {human_count(report['total_params'])} ({report['total_params']:,})",
        "",
        f"Weight points (per layer, stack '{report['layer_prefix']}'):",
        f"  {'module':<28} {'group':<10} {'type':<7} {'in':>7} {'out':>7} {'params/layer':>13}  all-linear",
    ]
    for kind in report["module_kinds"]:
        lines.append(
            f"  {kind['name']:<28} {kind['group']:<10} {kind['type']:<7} {kind['in_features']:>7} "
            f"{kind['out_features']:>7} {kind['params_per_layer']:>13,}  {'yes' if kind['in_all_linear'] else 'no'}"
        )
    for other in report["other_targetable"]:
        lines.append(f"  {other['name']:<28} {'outside':<10} {other['type']:<7} {other['in_features']:>7} "
                     f"{other['out_features']:>7} {other['params']:>13,}  "
                     f"{'yes' if other['in_all_linear'] else 'no'}")
    lora = report["lora"]
    spec = lora["spec"]
    target = spec["target_modules"] if isinstance(spec["target_modules"], str) else f"{len(spec['target_modules'])} names"
    mem = report["memory"]
    lines += [
        "",
        f"LoRA {'(TuneLab default) ' if lora.get('is_default') else ''}r={spec['r']} alpha={spec['alpha']} "
        f"target={target}: {lora['targeted_modules']} modules",
        f"  trainable     {lora['trainable_params']:,} ({lora['trainable_percent']}% of the base)",
        f"  adapter file  {human_bytes(lora['adapter_bytes']['fp32'])} fp32, {human_bytes(lora['adapter_bytes']['bf16'])} bf16",
        f"Memory (batch {mem['batch_size']} × {mem['seq_len']} tokens, rough):",
    ]
    for dtype in ("fp32", "bf16"):
        t, s = mem["training"][dtype], mem["serving"][dtype]
        lines.append(f"  {dtype}: training {human_bytes(t['total'])} (base {human_bytes(t['base'])}, "
                     f"activations {human_bytes(t['activations'])}); serving {human_bytes(s['total'])}")
    lines.append(f"(inspected in {report['elapsed_s']} s, without loading weights)")
    return "\n".join(lines)
