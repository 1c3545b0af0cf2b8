"""Step 12: decoding on the CPU against llama.cpp, the reference for a workstation without a GPU.

One random-weight Llama of Llama-2-7B's shapes (``SHAPES["7b"]``; a narrower one for ``--quick``) is written
as a transformers folder in bfloat16. llama.cpp gets it through its own tools: ``convert_hf_to_gguf.py`` to
a bfloat16 GGUF, then ``llama_model_quantize`` (its ``llama-quantize``) to Q8_0 and Q4_0 with its default
choices. Ours loads the same folder the way the engine does: bfloat16, or 8-bit / 4-bit weights quantized as
they load (``modeling/quantize_on_load.py``), computing in bfloat16. Each run is a fresh process with the
same threads: the same prompt of ``PROMPT_TOKENS`` ids in one forward pass, then ``tokens`` greedy tokens one
at a time with the key/value cache (our loop is ``ModelRunner._forward``'s: ``logits_to_keep=1``). Figures:
decode tokens/s and the process's peak resident memory (Linux's VmHWM, the whole process: Python, the
library and the weights; both map their weights file and count the pages they read).

llama.cpp is not a dependency: the step needs a llama.cpp source tree (``RADREPORT_LLAMA_CPP``, for
``convert_hf_to_gguf.py`` and its ``gguf-py``) and a Python with llama-cpp-python
(``RADREPORT_LLAMA_CPP_PYTHON``, default this one), and says it was skipped, and why, without them.
Writing and converting the 7B model takes about 10 minutes and 40 GB of disk; ``RADREPORT_CPU_DECODE_WORK``
names a folder that keeps them for the next run (nothing measured depends on it).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

SHAPES = {
    "7b": {"hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32,  # Llama-2-7B's config
           "num_attention_heads": 32, "num_key_value_heads": 32, "vocab_size": 32000},
    "quick": {"hidden_size": 1024, "intermediate_size": 2816, "num_hidden_layers": 4,
              "num_attention_heads": 16, "num_key_value_heads": 16, "vocab_size": 32000},
}
# (row name, our quantization, llama.cpp's GGUF type)
PRECISIONS = (("bf16", "none", "bf16"), ("int8", "int8", "q8_0"), ("int4", "int4", "q4_0"))
PROMPT_TOKENS = 64
TOKENS = {"full": 32, "quick": 16}
CHECK = "cpu decode 7b int8: ours / llama.cpp"
CHILD = Path(__file__).with_name("llamacpp_child.py")
WORK_ENV = "RADREPORT_CPU_DECODE_WORK"


def prompt_ids(count: int = PROMPT_TOKENS) -> list[int]:
    """The same prompt for both: BOS, then ids spread over the vocabulary."""
    return [1] + [100 + (i * 7919) % 31000 for i in range(count - 1)]


def llama_cpp_tools() -> tuple[Path, str] | str:
    """(llama.cpp source tree, the Python with llama-cpp-python), or why the step cannot run."""
    source = os.environ.get("RADREPORT_LLAMA_CPP")
    python = os.environ.get("RADREPORT_LLAMA_CPP_PYTHON", sys.executable)
    if not source or not (Path(source) / "convert_hf_to_gguf.py").is_file():
        return ("no llama.cpp source tree: set RADREPORT_LLAMA_CPP to a folder with convert_hf_to_gguf.py "
                "(e.g. vendor/llama.cpp of the llama-cpp-python sdist)")
    found = subprocess.run([python, "-c", "import llama_cpp"], capture_output=True)
    if found.returncode != 0:
        return f"{python} cannot import llama_cpp: set RADREPORT_LLAMA_CPP_PYTHON to a Python that has it"
    return Path(source), python


def _write_tokenizer(folder: Path, vocab: int) -> None:
    """A small SentencePiece model (the converter reads Llama's vocabulary from tokenizer.model and pads it
    to the config's size); made-up words, as the bench feeds token ids and never text."""
    import itertools

    import sentencepiece as spm

    words = ["".join(letters) for letters in itertools.product("aeiou", "bcdfg", "lmnrst")]
    lines = [" ".join(words[i:] + words[:i]) for i in range(len(words))] * 4
    spm.SentencePieceTrainer.train(sentence_iterator=iter(lines), model_prefix=str(folder / "tokenizer"),
                                   vocab_size=min(vocab, 200), model_type="bpe", hard_vocab_limit=False,
                                   bos_id=1, eos_id=2, unk_id=0, minloglevel=2)
    (folder / "tokenizer.vocab").unlink(missing_ok=True)
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "LlamaTokenizer", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}))


def write_random_llama(folder: Path, shape: dict[str, int], seed: int = 0) -> Path:
    """A LlamaForCausalLM folder of ``shape`` with random bfloat16 weights (std 0.02, norms 1), built on
    the meta device and filled in place, so writing it takes its size in memory once."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(**shape, max_position_embeddings=4096, bos_token_id=1, eos_token_id=2,
                         tie_word_embeddings=False)
    with torch.device("meta"):
        model = LlamaForCausalLM(config)
    model = model.to_empty(device="cpu").to(torch.bfloat16)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.ndim == 1:
                parameter.fill_(1.0)
            else:
                parameter.normal_(0.0, 0.02, generator=generator)
    model.save_pretrained(folder, max_shard_size="2GB")
    _write_tokenizer(folder, shape["vocab_size"])
    return folder


def gguf_files(folder: Path, work: Path, source: Path, python: str, threads: int) -> dict[str, Path]:
    """The folder in GGUF at bf16, q8_0 and q4_0, made with llama.cpp's converter and quantizer."""
    files = {"bf16": work / "model-bf16.gguf"}
    convert = [sys.executable, str(source / "convert_hf_to_gguf.py"), str(folder), "--outtype", "bf16",
               "--outfile", str(files["bf16"])]
    _checked(convert, "convert_hf_to_gguf.py")
    for kind in ("q8_0", "q4_0"):
        files[kind] = work / f"model-{kind}.gguf"
        _checked([python, str(CHILD), "quantize", str(files["bf16"]), str(files[kind]), kind, str(threads)],
                 f"llama_model_quantize {kind}")
    return files


def _checked(command: list[str], what: str) -> None:
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no message"])[-1]
        raise RuntimeError(f"{what} failed: {last}")


def _child_json(command: list[str], out: Path, what: str) -> dict[str, Any]:
    _checked(command, what)
    return json.loads(out.read_text())


def ours_decode(folder: Path, quantization: str, threads: int, tokens: int,
                prompt: list[int]) -> dict[str, Any]:
    """In this process: load ``folder`` as the engine would (bfloat16, ``quantization`` as the weights
    load), then the prompt and ``tokens`` greedy tokens; timings and the process's peak memory."""
    import torch
    from transformers import AutoModelForCausalLM, DynamicCache

    from napari_radreport.bench.measure import _status_kib

    torch.set_num_threads(threads)
    pretrained: dict[str, Any] = {"dtype": torch.bfloat16}
    if quantization != "none":
        from napari_radreport.modeling.quantize_on_load import on_load_config

        pretrained["quantization_config"] = on_load_config(quantization, "cpu")
    start = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(str(folder), **pretrained).eval()
    loaded = time.perf_counter()
    cache = DynamicCache(config=model.config)

    def forward(ids: list[int]) -> int:
        with torch.inference_mode():
            out = model(input_ids=torch.tensor([ids]), past_key_values=cache, use_cache=True,
                        logits_to_keep=1)
        return int(out.logits[0, -1].argmax())

    token = forward(prompt)
    first = time.perf_counter()
    generated = [token]
    for _ in range(tokens):
        token = forward([token])
        generated.append(token)
    end = time.perf_counter()
    return {"load_s": loaded - start, "prompt_s": first - loaded, "decode_s": end - first,
            "tokens_per_s": tokens / (end - first), "peak_rss_bytes": (_status_kib("VmHWM") or 0) * 1024,
            "rss_after_bytes": (_status_kib("VmRSS") or 0) * 1024, "tokens": generated,
            "torch": torch.__version__}


def run(quick: bool, threads: int | None = None, keep: Path | None = None) -> dict[str, Any]:
    """The step's figures: per precision, ours and llama.cpp's decode rate and peak memory, and the ratios
    (``{"skipped": why}`` without llama.cpp). ``keep``: a folder to reuse the model and GGUF files from."""
    tools = llama_cpp_tools()
    if isinstance(tools, str):
        return {"skipped": tools}
    source, python = tools
    threads = threads or len(os.sched_getaffinity(0))
    shape_name = "quick" if quick else "7b"
    tokens, prompt = TOKENS["quick" if quick else "full"], prompt_ids()
    work = keep or Path(tempfile.mkdtemp(prefix="radreport-cpu-decode-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        folder = work / f"llama-{shape_name}"
        started = time.perf_counter()
        if not (folder / "config.json").is_file():
            write_random_llama(folder, SHAPES[shape_name])
        ggufs = {kind: work / f"model-{kind}.gguf" for kind in ("bf16", "q8_0", "q4_0")}
        if not all(path.is_file() for path in ggufs.values()):
            ggufs = gguf_files(folder, work, source, python, threads)
        prepared_s = time.perf_counter() - started
        rows = {}
        for name, ours_kind, theirs_kind in PRECISIONS:
            out = work / f"ours-{name}.json"
            ours = _child_json([sys.executable, "-m", "napari_radreport.bench.cpu_decode_bench", "ours",
                                str(folder), ours_kind, str(threads), str(tokens), str(out),
                                *map(str, prompt)], out, f"ours {name}")
            out = work / f"llama-cpp-{name}.json"
            theirs = _child_json([python, str(CHILD), "decode", str(ggufs[theirs_kind]), str(threads),
                                  str(tokens), str(out), *map(str, prompt)], out, f"llama.cpp {name}")
            rows[name] = {"ours": ours, "llama_cpp": theirs, "gguf_type": theirs_kind,
                          "gguf_bytes": ggufs[theirs_kind].stat().st_size,
                          "tokens_per_s_ratio": round(ours["tokens_per_s"] / theirs["tokens_per_s"], 3),
                          "peak_memory_ratio": round(ours["peak_rss_bytes"] / theirs["peak_rss_bytes"], 3)}
        return {"shape": shape_name, "config": SHAPES[shape_name], "threads": threads,
                "prompt_tokens": len(prompt), "decode_tokens": tokens, "prepare_s": prepared_s,
                "precisions": rows, "int8_tokens_per_s_ratio": rows["int8"]["tokens_per_s_ratio"],
                "int8_peak_memory_ratio": rows["int8"]["peak_memory_ratio"]}
    finally:
        if keep is None:
            shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str]) -> None:
    """``ours FOLDER QUANTIZATION THREADS TOKENS OUT PROMPT...`` (one measured process of ``run``)."""
    if argv[0] != "ours":
        raise SystemExit(f"unknown command {argv[0]!r}")
    folder, quantization, threads, tokens, out = argv[1:6]
    result = ours_decode(Path(folder), quantization, int(threads), int(tokens), [int(t) for t in argv[6:]])
    Path(out).write_text(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1:])
