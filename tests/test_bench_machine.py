"""bench/machine.py: every benchmark names the CPU and the flags its figures depend on, and
writes its JSON one way."""

from __future__ import annotations

import json
from pathlib import Path

from bench.machine import cpu, write_results

SAPPHIRE = """processor\t: 0
model name\t: Intel(R) Xeon(R) Platinum 8481C
flags\t\t: fpu sse2 avx avx2 avx512f avx512bw avx512_bf16 amx_bf16 amx_tile fma
processor\t: 1
model name\t: Intel(R) Xeon(R) Platinum 8481C
flags\t\t: fpu sse2 avx avx2 avx512f avx512bw avx512_bf16 amx_bf16 amx_tile fma
"""
EPYC = "model name\t: AMD EPYC 7B13\nflags\t\t: fpu sse2 avx avx2 fma\n"


def test_the_cpu_is_named_with_the_vector_and_bf16_flags_only():
    intel = cpu(SAPPHIRE)
    assert intel["cpu"] == "Intel(R) Xeon(R) Platinum 8481C"
    assert intel["flags"] == ["amx_bf16", "amx_tile", "avx", "avx2", "avx512_bf16", "avx512bw", "avx512f"]
    amd = cpu(EPYC)
    assert (amd["cpu"], amd["flags"]) == ("AMD EPYC 7B13", ["avx", "avx2"])
    assert isinstance(amd["cores"], int) and amd["cores"] >= 1


def test_results_are_written_as_json_in_a_new_folder_and_odd_values_as_text(tmp_path, capsys):
    out = tmp_path / "deep" / "results.json"
    report = {"figure": 1.5, "where": Path("/x"), "note": "café"}
    assert write_results(out, report, echo=False) is report
    assert json.loads(out.read_text(encoding="utf-8")) == {"figure": 1.5, "where": "/x", "note": "café"}
    assert capsys.readouterr().out.strip() == f"wrote {out}"
    write_results(out, {"figure": 2})
    assert json.loads(capsys.readouterr().out) == {"figure": 2}
