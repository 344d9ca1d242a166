"""The lower part of the Adapters tab: the stored proof as a base-vs-adapter table and a
ΔW heatmap."""

from __future__ import annotations

from ui.adapter_shaping_panel import NO_PROOF, proof_heatmap, proof_markdown


def test_proof_renders_base_vs_adapter_and_the_delta_w_heatmap():
    assert proof_markdown(None) == NO_PROOF and proof_heatmap(None) == ""
    proof = {"adapter": "wine", "task": "classification", "created_at": "2026-01-01T00:00:00Z", "elapsed_s": 3.2,
             "eval": {"base": {"loss": 2.5, "perplexity": 12.18, "rows": 6, "tokens": 18},
                      "adapter": {"loss": 0.75, "perplexity": 2.117, "rows": 6, "tokens": 18}, "loss_change": -1.75},
             "judged_by": {"rows": 6, "source": "split", "note": "held back from the training file"},
             "exact_match": {"k": 4, "base_zero_shot": {"correct": 0, "total": 6, "score": 0.0, "ci95": [0.0, 0.39]},
                             "base_few_shot": {"correct": 2, "total": 6, "score": 2 / 6, "ci95": [0.097, 0.7]},
                             "adapter": {"correct": 5, "total": 6, "score": 5 / 6, "ci95": [0.436, 0.97]}},
             "self_consistency": {"mean": 0.9, "n_samples": 5, "temperature": 0.8},
             "divergence": {"changed": 4, "total": 6, "share": 4 / 6, "mean_change": 0.5},
             "forgetting": {"changed": 1, "total": 12},
             "changed_nothing": {"flag": False, "reasons": [], "causes": []},
             "verdict": {"suggestion": "too_few_rows", "text": "Too few held-out rows to tell (6; 20+ are needed)."},
             "delta_w": {"layers": ["0", "1"], "modules": ["self_attn.q_proj", "mlp.up_proj"],
                         "values": [[0.02, None], [0.004, None]], "max": 0.02, "mean": 0.012, "modules_adapted": 2}}
    text = proof_markdown(proof)
    assert "| eval loss | 2.5000 | 0.7500 |" in text
    assert ("| exact match | zero-shot 0/6 (0%, 95% CI 0%–39%); 4-shot 2/6 (33%, 95% CI 10%–70%) "
            "| 5/6 (83%, 95% CI 44%–97%) |") in text
    assert "90% of 5 samples agree" in text and "Judged on 6 rows held back from the training file" in text
    assert "| answers changed | — | 4/6 held-out prompts" in text and "1/12 everyday prompts" in text
    assert "**Suggestion**: Too few held-out rows to tell" in text and "changed nothing" not in text
    nothing = dict(proof, changed_nothing={"flag": True, "reasons": ["the update is negligible"],
                                           "causes": ["the learning rate is too low"]})
    assert "⚠️ **The adapter changed nothing measurable**: the update is negligible" in proof_markdown(nothing)
    style = dict(proof, exact_match=None, style={
        name: {key: {"correct": c, "total": 20, "score": c / 20, "ci95": [0.1, 0.9]}
               for key in ("style", "on_task", "both")} for name, c in (("base", 1), ("prompted", 7), ("adapter", 18))})
    assert "| carries the style | base 1/20 (5%, 95% CI 10%–90%); asked for it 7/20" in proof_markdown(style)
    heat = proof_heatmap(proof)
    assert heat.count("<tr><th>") == 1 + 2 and heat.count("tl-none") == 2 and ">0.02<" in heat
