"""Step 13's own parts on a tiny Llama: the model it writes loads and decodes greedily through our 8-bit and
4-bit loading, the way the step measures it, and without llama.cpp the step says why it was skipped."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("torch")

from napari_radreport.bench import cpu_decode_bench

TINY = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 4, "vocab_size": 256}


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory):
    return cpu_decode_bench.write_random_llama(tmp_path_factory.mktemp("llama") / "tiny", TINY)


def test_the_random_llama_has_the_shape_and_a_tokenizer_for_the_converter(tiny_llama):
    config = json.loads((tiny_llama / "config.json").read_text())
    assert {k: config[k] for k in TINY} == TINY and config["tie_word_embeddings"] is False
    assert (tiny_llama / "tokenizer.model").is_file() and (tiny_llama / "tokenizer_config.json").is_file()


def test_ours_decodes_the_same_greedy_tokens_in_bfloat16_and_8_bits(tiny_llama):
    prompt = cpu_decode_bench.prompt_ids(12)
    prompt = [t % TINY["vocab_size"] for t in prompt]
    full = cpu_decode_bench.ours_decode(tiny_llama, "none", 1, 6, prompt)
    eight = cpu_decode_bench.ours_decode(tiny_llama, "int8", 1, 6, prompt)
    assert len(full["tokens"]) == 7 and full["tokens_per_s"] > 0 and full["peak_rss_bytes"] > 0
    assert eight["tokens"][0] == full["tokens"][0]  # the prompt's greedy token survives 8 bits here
    four = cpu_decode_bench.ours_decode(tiny_llama, "int4", 1, 6, prompt)
    assert len(four["tokens"]) == 7


def test_without_llama_cpp_the_step_says_why(monkeypatch):
    monkeypatch.delenv("RADREPORT_LLAMA_CPP", raising=False)
    result = cpu_decode_bench.run(True)
    assert result == {"skipped": result["skipped"]} and "RADREPORT_LLAMA_CPP" in result["skipped"]
