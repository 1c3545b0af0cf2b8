"""Step 8: one stage-1 training step of the demo recipe's model (random weights, CPU).

Compared on the same batch: texts grouped by length (``ReportObjective``'s default) against one padded pass,
and each of them in fp32 against bf16 autocast (what the demo recipe asks for on the CPU). The batch has the
text lengths of a real demo-model batch (8 phantoms x 8 texts, all tasks); the token ids are random.
"""

from __future__ import annotations

from typing import Any

import torch

from napari_radreport.bench.measure import ratio, timed_interleaved

# Prompt + answer lengths of the texts of one demo-model stage-1 batch (8 phantoms x 8 texts, all tasks;
# measured 2026-12-02 before the report prompts were guided), image tokens included: most are questions,
# a few reports.
DEMO_BATCH_LENGTHS = [29] * 11 + [30] * 12 + [31] * 6 + [32] * 4 + [33] * 7 + [34] * 6 + [35] * 3 + [
    37, 37, 38, 42, 42, 44, 44, 44, 44, 52, 60, 64, 65, 69, 70]
STUDIES = 8


def _batch(config, lengths: list[int], image_tokens: int, prompt_length: int) -> dict[str, torch.Tensor]:
    """The trainer's batch (``training.data.collate``) of ``STUDIES`` studies with random pixels, their texts
    in turn: a start token, the image tokens, prompt words, then the answer (the scored part)."""
    from napari_radreport.training.data import IGNORE_INDEX, Encoded, collate

    generator = torch.Generator().manual_seed(0)
    texts = []
    for n in lengths:
        words = torch.randint(3, config.text_config.vocab_size - 2, (n,), generator=generator)
        words[0], words[1:1 + image_tokens] = 1, config.image_token_id
        ids = words.tolist()
        texts.append(Encoded(ids, [IGNORE_INDEX] * prompt_length + ids[prompt_length:]))
    vision, per_study = config.vision_config, len(lengths) // STUDIES
    items = [{"pixel_values": torch.rand((1, vision.in_channels, *vision.image_size), generator=generator),
              "texts": texts[i * per_study:(i + 1) * per_study]} for i in range(STUDIES)]
    return collate(items, pad_id=0)


def run(repeats: int) -> dict[str, Any]:
    """Times of one forward + backward step: grouped / one pass, fp32 / bf16 autocast."""
    from napari_radreport.modeling.recipes import load_recipe
    from napari_radreport.training.objectives import ReportObjective, length_groups

    recipe = load_recipe("radreport-demo-phantom")
    torch.manual_seed(0)
    model = recipe.build()
    model.train()
    image_tokens = model.num_image_tokens
    prompt_length = 1 + image_tokens + 6  # the demo prompt's few words after the image
    lengths = [max(n, prompt_length + 2) for n in DEMO_BATCH_LENGTHS]
    batch = _batch(model.config, lengths, image_tokens, prompt_length)
    objectives = {"grouped": ReportObjective(model), "one_pass": ReportObjective(model, max_groups=1)}

    def step(name: str, bf16: bool):
        def call():
            model.zero_grad(set_to_none=True)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                loss = objectives[name](**batch)
            loss.backward()
            return float(loss)
        return call

    calls = {(name, bf16): step(name, bf16) for name in objectives for bf16 in (False, True)}
    times = timed_interleaved(calls, repeats)
    groups = length_groups(lengths)
    padded = len(lengths) * max(lengths)
    grouped_tokens = sum(len(g) * max(lengths[i] for i in g) for g in groups)
    fp32 = {name: times[(name, False)] for name in objectives}
    bf16 = {name: times[(name, True)] for name in objectives}
    return {
        "model": "radreport-demo-phantom, random weights, "
                 f"{sum(p.numel() for p in model.parameters()) / 1e6:.1f} M parameters",
        "batch": f"{STUDIES} studies, {len(lengths)} texts of {min(lengths)}-{max(lengths)} tokens",
        "threads": torch.get_num_threads(),
        "tokens_one_pass": padded, "tokens_grouped": grouped_tokens, "groups": len(groups),
        "fp32": {name: t.as_dict() for name, t in fp32.items()},
        "bf16": {name: t.as_dict() for name, t in bf16.items()},
        "one_pass_over_grouped": ratio(fp32["one_pass"].seconds, fp32["grouped"].seconds),
        "fp32_over_bf16": ratio(fp32["grouped"].seconds, bf16["grouped"].seconds),
        "loss_difference_grouped_vs_one_pass": abs(fp32["grouped"].result - fp32["one_pass"].result),
    }
