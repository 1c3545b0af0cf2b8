"""llama.cpp's side of step 12, run by the Python that has llama-cpp-python (often another environment), so it
imports nothing of napari_radreport: ``python llamacpp_child.py quantize IN OUT TYPE THREADS`` or
``python llamacpp_child.py decode GGUF THREADS TOKENS OUT.json PROMPT_ID...``.

``quantize`` runs llama.cpp's own ``llama_model_quantize`` (what its ``llama-quantize`` tool runs) with its
default choices for the type; ``decode`` loads the GGUF (memory-mapped, as llama.cpp does by default), runs
the prompt in one batch, then decodes TOKENS tokens greedily one at a time, and writes the timings and the
process's peak resident memory (Linux's VmHWM).
"""

from __future__ import annotations

import ctypes
import json
import sys
import time

TYPES = {"q8_0": "LLAMA_FTYPE_MOSTLY_Q8_0", "q4_0": "LLAMA_FTYPE_MOSTLY_Q4_0"}


def _status_kib(field: str) -> int:
    with open("/proc/self/status", encoding="utf-8") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def quantize(source: str, target: str, kind: str, threads: int) -> None:
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, TYPES[kind])
    params.nthread = threads
    code = llama_cpp.llama_model_quantize(source.encode(), target.encode(), ctypes.byref(params))
    if code != 0:
        raise SystemExit(f"llama_model_quantize returned {code} for {source} -> {kind}")


def decode(path: str, threads: int, tokens: int, out: str, prompt: list[int]) -> None:
    import llama_cpp
    import numpy as np

    start = time.perf_counter()
    model = llama_cpp.Llama(model_path=path, n_ctx=len(prompt) + tokens + 8, n_batch=len(prompt),
                            n_threads=threads, n_threads_batch=threads, verbose=False)
    loaded = time.perf_counter()
    vocab = model.n_vocab()

    def greedy() -> int:  # the last position's logits, straight from llama.cpp's context
        logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(model.ctx, -1), shape=(vocab,))
        return int(np.argmax(logits))

    model.eval(prompt)
    token = greedy()
    first = time.perf_counter()
    generated = [token]
    for _ in range(tokens):
        model.eval([token])
        token = greedy()
        generated.append(token)
    end = time.perf_counter()
    result = {"load_s": loaded - start, "prompt_s": first - loaded, "decode_s": end - first,
              "tokens_per_s": tokens / (end - first), "peak_rss_bytes": _status_kib("VmHWM") * 1024,
              "rss_after_bytes": _status_kib("VmRSS") * 1024, "tokens": generated,
              "llama_cpp_python": llama_cpp.__version__}
    with open(out, "w", encoding="utf-8") as handle:
        json.dump(result, handle)


def main(argv: list[str]) -> None:
    if argv[0] == "quantize":
        quantize(argv[1], argv[2], argv[3], int(argv[4]))
    elif argv[0] == "decode":
        decode(argv[1], int(argv[2]), int(argv[3]), argv[4], [int(t) for t in argv[5:]])
    else:
        raise SystemExit(f"unknown command {argv[0]!r}: quantize or decode")


if __name__ == "__main__":
    main(sys.argv[1:])
