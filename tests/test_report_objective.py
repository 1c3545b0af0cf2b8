"""The report stages' loss: each answer's mean, and texts grouped by length give the
ungrouped loss and gradients."""

from __future__ import annotations

import itertools
import random

import pytest
import torch

from napari_radreport.training.data import IGNORE_INDEX, Encoded, collate
from napari_radreport.training.objectives import ReportObjective, answer_losses, length_groups


def _padded_tokens(lengths: list[int], groups: list[list[int]]) -> int:
    return sum(len(g) * max(lengths[i] for i in g) for g in groups)


def _fewest_padded_tokens(lengths: list[int], max_groups: int) -> int:
    """Brute force over every way to cut the sorted lengths into at most ``max_groups`` runs."""
    sizes, n = sorted(lengths), len(lengths)
    best = n * sizes[-1]
    for k in range(1, max_groups):
        for cuts in itertools.combinations(range(1, n), k):
            bounds = [0, *cuts, n]
            best = min(best, sum((b - a) * sizes[b - 1] for a, b in itertools.pairwise(bounds)))
    return best


@pytest.mark.parametrize("seed", range(6))
def test_length_groups_partition_the_texts_with_the_fewest_padded_tokens(seed):
    rng = random.Random(seed)
    lengths = [rng.choice([rng.randint(20, 40), rng.randint(50, 90)]) for _ in range(rng.randint(1, 12))]
    groups = length_groups(lengths, max_groups=3)
    assert sorted(i for g in groups for i in g) == list(range(len(lengths)))
    assert 1 <= len(groups) <= 3 and all(groups)
    assert _padded_tokens(lengths, groups) == _fewest_padded_tokens(lengths, 3)


def test_length_groups_keep_one_group_when_lengths_are_equal():
    assert length_groups([30, 30, 30]) == [[0, 1, 2]]


@pytest.fixture(scope="module")
def loaded(tiny_ct_model):
    from napari_radreport.modeling.loading import load_model

    loaded = load_model(tiny_ct_model, dtype=torch.float32)
    loaded.model.eval()  # no dropout: two forward passes must agree
    return loaded


def _batch(loaded, answer_lengths: list[list[int]]) -> dict[str, torch.Tensor]:
    """Studies with random pixels; each text a prompt then an answer of the given length."""
    torch.manual_seed(0)
    prompt = loaded.prompt_ids(_Volume(), "Describe the findings.")[0].tolist()
    vocab = loaded.model.config.text_config.vocab_size
    items = []
    for lengths in answer_lengths:
        texts = []
        for n in lengths:
            answer = torch.randint(3, vocab - 2, (n,)).tolist()
            texts.append(Encoded(prompt + answer, [IGNORE_INDEX] * len(prompt) + answer))
        items.append({"pixel_values": torch.randn(1, *loaded.model.config.vision_config.image_size)[None],
                      "texts": texts})
    return collate(items, loaded.tokenizer.pad_token_id)


class _Volume:
    kind, is_volume, images = "volume", True, ["x"]


def _loss_and_grads(objective, batch):
    objective.model.zero_grad()
    loss = objective(**batch)
    loss.backward()
    grads = [p.grad.clone() for p in objective.model.parameters() if p.grad is not None]
    return loss.detach(), grads


def test_grouped_texts_give_the_ungrouped_loss_and_gradients(loaded):
    batch = _batch(loaded, [[3, 40, 5], [60, 2]])
    widths = batch["attention_mask"].sum(1)
    assert len(length_groups(widths.tolist())) > 1  # the case this test is about: more than one group
    one_loss, one_grads = _loss_and_grads(ReportObjective(loaded.model, max_groups=1), batch)
    loss, grads = _loss_and_grads(ReportObjective(loaded.model, max_groups=3), batch)
    torch.testing.assert_close(loss, one_loss, rtol=1e-5, atol=1e-6)
    assert len(grads) == len(one_grads) > 0
    for a, b in zip(grads, one_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_each_answer_weighs_the_same_whatever_its_length():
    torch.manual_seed(0)
    logits = torch.randn(2, 8, 11)
    labels = torch.full((2, 8), IGNORE_INDEX)
    labels[0, 2:4] = torch.tensor([1, 2])  # a 2-token answer
    labels[1, 1:8] = torch.randint(0, 11, (7,))  # a 7-token answer
    token = torch.nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2), labels[:, 1:],
                                              ignore_index=IGNORE_INDEX, reduction="none")
    mask = labels[:, 1:] != IGNORE_INDEX
    torch.testing.assert_close(answer_losses(logits, labels), (token * mask).sum(1) / mask.sum(1))


def test_texts_without_an_answer_do_not_count():
    logits, labels = torch.randn(2, 5, 7), torch.full((2, 5), IGNORE_INDEX)
    labels[1, 2:] = torch.tensor([1, 2, 3])
    assert answer_losses(logits, labels).shape == (1,)
