"""The benchmark's figures as Markdown tables (written into docs/) and as the terminal summary."""

from __future__ import annotations

from typing import Any


def _s(entry: dict[str, Any]) -> str:
    return f"{entry['median_s'] * 1000:.0f} ms" if entry["median_s"] < 1 else f"{entry['median_s']:.2f} s"


def _mem(entry: dict[str, Any]) -> str:
    return f"{entry['peak_rss_mib']:.0f} MiB (+{entry['added_mib']:.0f})"


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines + [""]


def markdown(r: dict[str, Any]) -> str:
    m = r["machine"]
    out = [f"Measured {r['date_utc']} UTC with `{r['command']}` on {m['cpu']}, {m['cores']} cores "
           f"({m['torch_threads']} torch threads), {m['memory_gib']} GiB, GPU: {m['gpu']}; {m['system']}, "
           f"Python {m['python']}, torch {m['torch']}. Times are medians of repeats after a warm-up; "
           "memory is the step's peak resident set (+ what it added). Each step ran in its own process.", ""]
    d = r["dicom"]
    out += [f"### 1. Loading the DICOM series ({d['files']} files, {d['shape']}, "
            f"{d['volume_mib']} MiB in HU)", ""]
    rows = [["ours (`load_study`)", _s(d["ours"]), "1.00", _mem(d["ours"])]]
    for name, label in (("pydicom_loop", "pydicom loop (read, sort, rescale, stack)"),
                        ("simpleitk", "SimpleITK ImageSeriesReader")):
        if isinstance(d.get(name), dict):
            rows.append([label, _s(d[name]), f"{d['ratios'][name + '_over_ours']:.2f}", _mem(d[name])])
    out += _table(["reader", "time", "time / ours", "peak memory"], rows)
    p = r["preprocess"]
    if "skipped" in p:
        out += ["### 2. Preprocessing", "", p["skipped"], ""]
    else:
        out += [f"### 2. Preprocessing that volume (input {p['input_shape']} "
                f"at {p['input_spacing_mm']} mm)", ""]
        rows = []
        for name in ("e3d-gpt", "m3d"):
            e = p[name]
            diff = e.get("vs_monai_chain", {})
            grid = e.get("resample_vs_monai_on_our_grid_hu")
            note = f"max {diff.get('max_abs')}, mean {diff.get('mean_abs')}"
            if grid:
                note += f"; resampling on our grid: max {grid['max_abs']} HU"
            rows.append([name, _s(e["ours"]), _s(e["monai"]), f"{e['monai_over_ours']:.2f}", _mem(e["ours"]),
                         _mem(e["monai"]), note])
        out += _table(["recipe", "ours", "MONAI", "MONAI / ours", "ours memory", "MONAI memory",
                       "|ours - MONAI| (0-1 scale)"], rows)
    out += ["### 3. Encoding (random weights, CPU, fp32)", ""]
    rows = [[e["size"], _s(e["ours_sdpa"]), _s(e["explicit_attention"]), f"{e['explicit_over_ours']:.2f}",
             _mem(e["ours_sdpa"]), _mem(e["explicit_attention"])] for e in r["encoder"].values()]
    out += _table(["encoder", "ours (SDPA)", "explicit attention", "explicit / ours", "ours memory",
                   "explicit memory"], rows)
    llm = r["llm"]
    md = llm["model"]
    out += [f"### 4-6. The model: {md['vision']} -> {md['image_tokens']} image tokens -> {md['text']} "
            f"({md['parameters_m']} M parameters, {md['weights']}, {md['device']} {md['dtype']})", ""]
    ft = llm["first_token"]
    out += ["Time from Generate to the first token of a Findings section (cold study, model loaded):", ""]
    out += _table(["load model", "preprocess", "encode", "prefill", "first token (from the request)",
                   "prompt tokens"],
                  [[f"{ft['load_s']:.2f} s", f"{ft['preprocess_s'] * 1000:.0f} ms",
                    f"{ft['encode_s'] * 1000:.0f} ms", f"{ft['prefill_s'] * 1000:.0f} ms",
                    f"{ft['first_token_s'] * 1000:.0f} ms", ft["prompt_tokens"]]])
    st = llm["streaming"]
    out += [f"Decoding {st['tokens']} tokens, greedy, from the cached image:", ""]
    out += _table(["path", "tokens/s", "total", "peak memory"], [
        ["engine streaming (background job, events drained)", st["engine_stream"]["decode_tokens_per_s"],
         _s(st["engine_stream"]["total"]), _mem(st["engine_stream"]["total"])],
        ["`model.generate`", st["model_generate"]["decode_tokens_per_s"], _s(st["model_generate"]["total"]),
         _mem(st["model_generate"]["total"])],
        ["engine, with a second OpenMP team in the process",
         st["with_a_second_thread_team"]["decode_tokens_per_s"], "", ""]])
    out += [f"Engine / generate decoding rate: **{st['decode_rate_ratio']:.3f}** (end to end "
            f"{st['end_to_end_ratio']:.3f}); same text: {st['same_text']}.", ""]
    fu = llm["follow_up"]
    out += [f"Follow-up question ({fu['answer_tokens']}-token answer, after one earlier turn):", ""]
    out += _table(["what is reused", "first token", "whole answer", "prompt tokens run"], [
        [label, f"{fu[k]['first_token_s'] * 1000:.0f} ms", f"{fu[k]['answer_s'] * 1000:.0f} ms",
         fu[k]["prompt_tokens_run"]]
        for k, label in (("cached", "image + key/value prefix (ours)"), ("image_cached", "image only"),
                         ("recompute", "nothing (preprocess, encode, whole prompt)"))])
    out += [f"Recompute / cached: **{fu['first_token_ratio']:.1f}x** to the first token, "
            f"{fu['answer_ratio']:.1f}x for the whole answer; same answer: {fu['same_answer']}.", ""]
    dg = llm["diagnosis"]
    out += [f"Diagnosis of {dg['labels']} labels:", ""]
    out += _table(["way", "time", "time / ours", "peak memory"], [
        ["shared prefix, tails batched (ours)", _s(dg["shared_prefix_batched"]), "1.00",
         _mem(dg["shared_prefix_batched"])],
        ["18 passes, image encoded each time", _s(dg["independent_encode_each"]),
         f"{dg['ratio_vs_encode_each']:.2f}", _mem(dg["independent_encode_each"])],
        ["18 passes, image encoded once", _s(dg["independent_encode_once"]),
         f"{dg['ratio_vs_encode_once']:.2f}", _mem(dg["independent_encode_once"])]])
    out += [f"Largest difference in P(yes): {dg['max_probability_difference']:.1e}.", ""]
    ui = r.get("ui")
    if ui is not None:
        out += ["### 7. UI", ""]
        if "skipped" in ui:
            out += [ui["skipped"], ""]
        else:
            out += [f"Longest Qt event-loop stall while a report streamed into the Report dock: "
                    f"**{ui['longest_stall_ms']} ms** (median tick {ui['median_tick_ms']} ms "
                    f"for a 5 ms timer, {ui['words_streamed']} words in {ui['stream_s']} s; "
                    f"peak memory {_mem(ui['memory'])}).", ""]
    out += _train_table(r.get("train"))
    out += _startup_table(r.get("startup"))
    out += _memory_table(r.get("memory"))
    out += _threads_table(r.get("threads"))
    out += _batch_table(r.get("batch"))
    out += _cpu_decode_table(r.get("cpu_decode"))
    out += ["### Checks", ""]
    out += _table(["check", "value", "bound", "ok"], [
        [c["check"], _value(c), _bound(c), _verdict(c)] for c in r["checks"]])
    return "\n".join(out)


def _value(check: dict[str, Any]) -> Any:
    return f"skipped: {check['skipped']}" if "skipped" in check else check["value"]


def _verdict(check: dict[str, Any]) -> str:
    return "skipped" if "skipped" in check else "yes" if check["ok"] else "**no**"


def _threads_table(t: dict[str, Any] | None) -> list[str]:
    if t is None:
        return []
    d = t["baseline_default_threads"]
    out = [f"### 11b. Decoding beside another torch job (the step-4 model, {t['tokens']} tokens; competitor: "
           f"{t['competitor']})", ""]
    out += _table(["threads, waiting", "idle tokens/s", "beside the competitor", "under load / idle"], [
        [f"{t['threads']}, passive (the engine's)", t["idle_tokens_per_s"], t["under_load_tokens_per_s"],
         f"**{t['ratio']}**"],
        [f"{d['threads']}, torch's defaults", d["idle_tokens_per_s"], d["under_load_tokens_per_s"],
         d["ratio"]]])
    return out


def _batch_table(t: dict[str, Any] | None) -> list[str]:
    if t is None:
        return []
    out = [f"### 12. Batched prediction (`radreport predict --batch-size {t['batch_size']}`, the demo model, "
           f"{t['studies']} phantom studies, {t['torch_threads']} torch threads)", ""]
    rows = [[", ".join(e["tasks"]), f"{e['one_at_a_time_studies_per_hour']:.0f}",
             f"{e['batched_studies_per_hour']:.0f}", f"**{e['ratio']:.2f}**", e["same_outputs"]]
            for e in (t, t["report_only"])]
    out += _table(["tasks", "one at a time (studies/h)", "batched (studies/h)", "batched / one",
                   "same predictions"], rows)
    return out


def _cpu_decode_table(t: dict[str, Any] | None) -> list[str]:
    if t is None:
        return []
    out = ["### 13. Decoding on the CPU against llama.cpp", ""]
    if "skipped" in t:
        return out + [f"Skipped: {t['skipped']}.", ""]
    c = t["config"]
    out[0] += (f" (random weights, {t['shape']}: {c['num_hidden_layers']} layers of {c['hidden_size']}, "
               f"vocabulary {c['vocab_size']}; {t['prompt_tokens']}-token prompt, {t['decode_tokens']} "
               f"greedy tokens, {t['threads']} threads)")
    rows = []
    for name, e in t["precisions"].items():
        ours, theirs = e["ours"], e["llama_cpp"]
        rows.append([name, e["gguf_type"], f"{ours['tokens_per_s']:.2f}", f"{theirs['tokens_per_s']:.2f}",
                     f"**{e['tokens_per_s_ratio']:.2f}**", f"{ours['peak_rss_bytes'] / 2**30:.2f}",
                     f"{theirs['peak_rss_bytes'] / 2**30:.2f}", f"{e['peak_memory_ratio']:.2f}",
                     f"{ours['load_s']:.1f} / {theirs['load_s']:.1f}",
                     f"{_agreeing(ours['tokens'], theirs['tokens'])} of {len(ours['tokens'])}"])
    out += _table(["ours", "llama.cpp", "ours tokens/s", "llama.cpp tokens/s", "ours / llama.cpp",
                   "ours peak GiB", "llama.cpp peak GiB", "memory ours / llama.cpp", "load s (ours / l.cpp)",
                   "greedy tokens alike from the first"], rows)
    out += ["Random weights give nearly tied logits, so one rounding difference sends the two greedy paths "
            "apart; with the quick model's weights both write the same bfloat16 tokens.", ""]
    return out


def _agreeing(ours: list[int], theirs: list[int]) -> int:
    """How many greedy tokens the two runs share before they first differ."""
    return next((i for i, (a, b) in enumerate(zip(ours, theirs)) if a != b), min(len(ours), len(theirs)))


def _bound(check: dict[str, Any]) -> str:
    if "at_least" in check:
        return f">= {check['at_least']}"
    if "at_most" in check:
        return f"<= {check['at_most']}"
    if "between" in check:
        return f"{check['between'][0]} to {check['between'][1]} (every model)"
    return "true"


def _memory_table(t: dict[str, Any] | None) -> list[str]:
    if t is None:
        return []
    out = [f"### 11. Will it fit? The memory estimate against the measured peak (a report of two "
           f"{t['answer_tokens']}-token sections and its diagnosis check, each model in a fresh process)", ""]
    rows = []
    for name, m in t["models"].items():
        e = m["estimate"]
        rows.append([f"{name} ({m['weights_file_mib']:.0f} MiB of weights, {m['dtype']})",
                     f"{e['weights']:.0f}", f"{e['kv_cache']:.0f}", f"{e['activations']:.0f}",
                     f"{e['encoder']:.0f}", f"{e['overhead']:.0f}", f"{e['total']:.0f}",
                     f"{m['measured_peak_added_mib']:.0f}", f"**{m['ratio']:.3f}**"])
    out += _table(["model", "weights", "key/value", "LM activations", "encoder", "overhead", "estimate",
                   "measured peak (MiB)", "estimate / measured"], rows)
    method = next(iter(t["models"].values()))["method"]
    out += [f"Estimates in MiB (`engine/memory_plan.py`, the larger of a section's and the diagnosis' peak); "
            f"measured: the peak resident set added by loading and the report ({method}).", ""]
    return out


def _train_table(t: dict[str, Any] | None) -> list[str]:
    if t is None:
        return []
    out = [f"### 8. A stage-1 training step ({t['model']}; {t['batch']}, forward and backward)", ""]
    rows = [[label, _s(t["fp32"][k]), _s(t["bf16"][k])]
            for k, label in (("grouped", f"grouped by length (ours, {t['groups']} groups, "
                                         f"{t['tokens_grouped']} tokens)"),
                             ("one_pass", f"one padded pass ({t['tokens_one_pass']} tokens)"))]
    out += _table(["texts through the language model", "fp32", "bf16 autocast"], rows)
    out += [f"One pass / grouped: **{t['one_pass_over_grouped']:.2f}x**; fp32 / bf16 (grouped): "
            f"{t['fp32_over_bf16']:.2f}x; loss difference grouped vs one pass: "
            f"{t['loss_difference_grouped_vs_one_pass']:.1e}.", ""]
    return out


def _startup_table(t: dict[str, Any] | None) -> list[str]:
    if t is None:
        return []
    out = ["### 9. Start-up (a fresh interpreter each, median wall time)", ""]
    out += _table(["command", "s"], [
        ["`python -c pass` (the interpreter alone)", t["interpreter_s"]],
        ["`radreport --help`", t["help_s"]],
        ["`import napari_radreport.widgets.report_dock`", t["dock_import_s"]],
        ["`import torch, transformers` (what either would cost if it loaded them)", t["torch_import_s"]],
    ])
    loaded = ", ".join(t["heavy_modules_loaded"]) or "none"
    out += [f"torch + transformers / `radreport --help`: **{t['torch_import_over_help']:.1f}x**; "
            f"heavy libraries loaded by `--help` and the dock: {loaded}.", ""]
    return out


def summary(r: dict[str, Any]) -> str:
    """Every ratio on one line each, for the terminal."""
    lines = [f"{c['check']}: {_value(c)}" + ("" if c["ok"] else "  << below the bound") for c in r["checks"]]
    ui = r.get("ui", {})
    if "longest_stall_ms" in ui:
        lines.append(f"ui: longest event-loop stall {ui['longest_stall_ms']} ms")
    return "\n".join(lines)
