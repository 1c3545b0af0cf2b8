"""Model-agnostic grounding: how much each input voxel moved the probability of a sentence's tokens.

For a prompt (image + question) followed by an answer, one forward pass from the pixels (not the cached
features) and one backward pass per sentence give d log P(sentence tokens | everything before) / d pixels.
``gradient_x_input`` keeps the part of gradient x input that speaks for the sentence (positive), which is
zero where the input is black (air in a [0, 1] window; ``baseline`` gives black where it is not 0, as in a
CLIP-normalised radiograph); ``saliency`` keeps the gradient's magnitude. Either
goes through every part of the model (language model, perceiver, encoder) whatever their kind, so it works
for any model whose pixels come from our processor.

``attribute_image_tokens`` stops at the language model's input instead: the same objective's gradient with
respect to the image tokens' embeddings (the runner's cached image features), times them, summed over the
embedding; one map per image over its tokens. It needs no backward pass through the vision tower (for
MedGemma's 85 CT slices at 896 x 896 that pass would hold every slice's activations), and a family that knows
where its tokens lie maps them back to the study (``MedGemmaFamily.token_grid``).
"""

from __future__ import annotations

import numpy as np
import torch

METHODS = ("gradient_x_input", "saliency")


def sentence_token_groups(offsets: list[tuple[int, int]], spans: list[tuple[int, int]],
                          first: int) -> list[list[int]]:
    """For each character span of the answer, the positions (in the whole prompt + answer) of the answer
    tokens that overlap it; ``first`` is the position of the answer's first token."""
    return [[first + i for i, (a, b) in enumerate(offsets) if b > start and a < end]
            for start, end in spans]


def _check(method: str) -> None:
    if method not in METHODS:
        raise ValueError(f"unknown attribution method {method!r}; use one of {', '.join(METHODS)}")


def _group_maps(logits: torch.Tensor, input_ids: torch.Tensor, groups: list[list[int]], wrt: torch.Tensor,
                heat_of, empty_shape: tuple[int, ...]) -> list[np.ndarray]:
    """For each group of token positions, ``heat_of`` the gradient of the group's summed log-probabilities
    (``logits``: one sequence's, [t, vocabulary]) with respect to ``wrt``; zeros for an empty group."""
    logprobs = logits[:-1].float().log_softmax(-1)
    token_logprobs = logprobs.gather(-1, input_ids[0, 1:, None])[:, 0]  # [t - 1]: log P(ids[t])
    maps: list[np.ndarray] = []
    for n, group in enumerate(groups):
        if not group:
            maps.append(np.zeros(empty_shape, dtype=np.float32))
            continue
        objective = token_logprobs[torch.as_tensor(group, device=logits.device) - 1].sum()
        (gradient,) = torch.autograd.grad(objective, wrt, retain_graph=n < len(groups) - 1)
        maps.append(heat_of(gradient).float().cpu().numpy())
    return maps


def attribute(model, pixels: torch.Tensor, ids: list[int], groups: list[list[int]],
              method: str = "gradient_x_input", baseline: torch.Tensor | float = 0.0) -> list[np.ndarray]:
    """One heatmap per group of token positions, on the model's input grid, channels summed, not
    normalised: a volume's (D, H, W) for pixels (1, C, D, H, W), every image's (N, H, W) for (N, C, H, W).
    A group's objective is the sum of its tokens' log-probabilities; gradient x input measures each pixel
    from ``baseline`` (black)."""
    _check(method)
    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    pixels = pixels.detach().to(device=device, dtype=dtype).requires_grad_(True)
    offset = (pixels.detach() - torch.as_tensor(baseline, dtype=dtype).to(device))
    volume = pixels.dim() == 5

    def heat_of(gradient: torch.Tensor) -> torch.Tensor:
        if method == "gradient_x_input":
            heat = (gradient * offset).sum(1).clamp_min(0)
        else:
            heat = gradient.abs().sum(1)
        return heat[0] if volume else heat

    input_ids = torch.as_tensor(ids, device=device).reshape(1, -1)
    with torch.enable_grad():
        logits = model(input_ids=input_ids, pixel_values=pixels, use_cache=False).logits[0]
        return _group_maps(logits, input_ids, groups, pixels, heat_of,
                           tuple(pixels.shape[2:] if volume else pixels[:, 0].shape))


def attribute_image_tokens(runner, study, ids: list[int], extra: dict, groups: list[list[int]],
                           method: str = "gradient_x_input") -> list[np.ndarray]:
    """One map per group of token positions over the image tokens, (images, tokens per image), not
    normalised: gradient x input (positive part, the input measured from a zero embedding) or the
    gradient's magnitude (``saliency``) at each image token's embedding."""
    _check(method)
    model, family = runner.model, runner.family
    device = next(model.parameters()).device
    features = runner.image_features(study)
    input_ids = torch.as_tensor(ids, device=device).reshape(1, -1)
    with torch.enable_grad():
        embedded = features.clone().detach().requires_grad_(True)  # a copy that autograd may track

        def heat_of(gradient: torch.Tensor) -> torch.Tensor:
            if method == "gradient_x_input":
                return (gradient * embedded.detach()).sum(-1).clamp_min(0)
            return gradient.abs().sum(-1)

        inputs = family.image_inputs(extra, lambda: embedded)
        inputs.update({k: v.to(device) for k, v in family.token_inputs(ids).items()})
        logits = model(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), use_cache=False,
                       **inputs).logits[0]
        return _group_maps(logits, input_ids, groups, embedded, heat_of, tuple(embedded.shape[:2]))
