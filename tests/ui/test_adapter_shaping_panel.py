"""The lower part of the Adapters tab: the stored proof as a base-vs-adapter table and a
ΔW heatmap."""

from __future__ import annotations

from ui.adapter_shaping_panel import NO_PROOF, proof_heatmap, proof_markdown


def test_proof_renders_base_vs_adapter_and_the_delta_w_heatmap():
    assert proof_markdown(None) == NO_PROOF and proof_heatmap(None) == ""
    proof = {"adapter": "wine", "task": "classification", "created_at": "2026-01-01T00:00:00Z", "elapsed_s": 3.2,
             "eval": {"base": {"loss": 2.5, "perplexity": 12.18, "rows": 6, "tokens": 18},
                      "adapter": {"loss": 0.75, "perplexity": 2.117, "rows": 6, "tokens": 18}, "loss_change": -1.75},
             "exact_match": {"k": 4, "base_few_shot": {"correct": 2, "total": 6, "score": 2 / 6},
                             "adapter_zero_shot": {"correct": 5, "total": 6, "score": 5 / 6}},
             "self_consistency": {"mean": 0.9, "n_samples": 5, "temperature": 0.8},
             "delta_w": {"layers": ["0", "1"], "modules": ["self_attn.q_proj", "mlp.up_proj"],
                         "values": [[0.02, None], [0.004, None]], "max": 0.02, "mean": 0.012, "modules_adapted": 2}}
    text = proof_markdown(proof)
    assert "| eval loss | 2.5000 | 0.7500 |" in text
    assert "| exact match | 2/6 (33%) with 4-shot prompts | 5/6 (83%) zero-shot |" in text
    assert "90% of 5 samples agree" in text and "1.7500 lower" in text
    heat = proof_heatmap(proof)
    assert heat.count("<tr><th>") == 1 + 2 and heat.count("tl-none") == 2 and ">0.02<" in heat
