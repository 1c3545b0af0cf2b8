"""GREEN (Ostmeier et al. 2024): a fine-tuned LLM lists a candidate report's errors against the reference;
the score is matched findings / (matched findings + clinically significant errors).

Matched to the authors' ``green_score`` package (Stanford-AIMI/GREEN, ``green_score/green.py`` and
``utils.py`` at commit 02279b8 / 0f398b7):

- prompt: :func:`green_prompt`, the exact text the GREEN models were fine-tuned on (a functional interface,
  reproduced verbatim; each report cut to 300 words), sent as one human turn through the authors' chat
  template (``<|user|>`` ... ``<|assistant|>``), left padding, greedy decoding, 2048 tokens in all;
- a category's text runs from ``[<Category>]:`` to the first blank line; text starting with "No" counts 0;
- significant errors: each line ``(a) ...`` to ``(f) ...`` (or ``(1)`` to ``(6)``) gives the first integer
  after ": " that a period follows; a missing sub-category counts 0;
- matched findings: the integer the category text starts with, before a period;
- score: 0 when there are no matched findings (also when the category is missing), else
  matched / (matched + sum of the six significant counts); the corpus score is the mean over reports.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from napari_radreport.evaluation.metric import MetricSpec, MetricUnavailable, check_pairs, mean

SUB_CATEGORIES = (
    "(a) False report of a finding in the candidate",
    "(b) Missing a finding present in the reference",
    "(c) Misidentification of a finding's anatomic location/position",
    "(d) Misassessment of the severity of a finding",
    "(e) Mentioning a comparison that isn't in the reference",
    "(f) Omitting a comparison detailing a change from a prior study",
)
SIGNIFICANT, INSIGNIFICANT, MATCHED = ("Clinically Significant Errors", "Clinically Insignificant Errors",
                                       "Matched Findings")
MAX_TOKENS = 2048  # prompt + completion, as the authors' generate(max_length=2048)
# The chat template the authors' green_score sets on the tokenizer (d72c1951): a human turn, then the answer.
CHAT_TEMPLATE = (  # verbatim, newlines included (they survive after expressions)
    "{% for message in messages %}\n{% if message['from'] == 'human' %}\n"
    "{{ '<|user|>\n' + message['value'] + eos_token }}\n{% elif message['from'] == 'system' %}\n"
    "{{ '<|system|>\n' + message['value'] + eos_token }}\n{% elif message['from'] == 'gpt' %}\n"
    "{{ '<|assistant|>\n'  + message['value'] + eos_token }}\n{% endif %}\n"
    "{% if loop.last and add_generation_prompt %}\n{{ '<|assistant|>' }}\n{% endif %}\n{% endfor %}")

# Verbatim from green_score/utils.py make_prompt (Stanford-AIMI/GREEN, MIT licence): the models expect
# exactly this text.
_PROMPT = (
    "Objective: Evaluate the accuracy of a candidate radiology report in comparison to a reference "
    "radiology report composed by expert radiologists.\n\n    Process Overview: You will be presented "
    "with:\n\n    1. The criteria for making a judgment.\n    2. The reference radiology report.\n    3. "
    "The candidate radiology report.\n    4. The desired format for your assessment.\n\n    1. Criteria "
    "for Judgment:\n\n    For each candidate report, determine:\n\n    The count of clinically significant "
    "errors.\n    The count of clinically insignificant errors.\n\n    Errors can fall into one of these "
    "categories:\n\n    a) False report of a finding in the candidate.\n    b) Missing a finding present "
    "in the reference.\n    c) Misidentification of a finding's anatomic location/position.\n    d) "
    "Misassessment of the severity of a finding.\n    e) Mentioning a comparison that isn't in the "
    "reference.\n    f) Omitting a comparison detailing a change from a prior study.\n    Note: "
    "Concentrate on the clinical findings rather than the report's writing style. Evaluate only the "
    "findings that appear in both reports.\n\n    2. Reference Report:\n    {reference}\n\n    3. "
    "Candidate Report:\n    {candidate}\n\n    4. Reporting Your Assessment:\n\n    Follow this specific "
    "format for your output, even if no errors are found:\n    ```\n    [Explanation]:\n    "
    "<Explanation>\n\n    [Clinically Significant Errors]:\n    (a) <Error Type>: <The number of errors>. "
    "<Error 1>; <Error 2>; ...; <Error n>\n    ....\n    (f) <Error Type>: <The number of errors>. <Error "
    "1>; <Error 2>; ...; <Error n>\n\n    [Clinically Insignificant Errors]:\n    (a) <Error Type>: <The "
    "number of errors>. <Error 1>; <Error 2>; ...; <Error n>\n    ....\n    (f) <Error Type>: <The number "
    "of errors>. <Error 1>; <Error 2>; ...; <Error n>\n\n    [Matched Findings]:\n    <The number of "
    "matched findings>. <Finding 1>; <Finding 2>; ...; <Finding n>\n    ```\n"
)


def green_prompt(reference: str, candidate: str, max_words: int = 300) -> str:
    """The GREEN prompt for one pair; each report cut to its first 300 whitespace-separated words, as the
    authors do."""
    reference, candidate = (" ".join(text.split()[:max_words]) for text in (reference, candidate))
    return _PROMPT.replace("{reference}", reference, 1).replace("{candidate}", candidate, 1)


def clean_completion(text: str) -> str:
    """The model's answer after its last "[Explanation]:" marker, without stray "</s>" / "<unk>"."""
    if "[Explanation]:" in text:
        text = text.split("[Explanation]:")[-1]
    return text.replace("</s>", "").replace("<unk>", "")


def _category_text(completion: str, category: str) -> str | None:
    found = re.search(rf"\[{re.escape(category)}\]:\s*(.*?)(?:\n\s*\n|\Z)", completion, re.DOTALL)
    return None if found is None else found.group(1)


def error_counts(completion: str, category: str = SIGNIFICANT) -> list[int]:
    """The six sub-category counts (a)-(f) of an error category; zeros where missing or "No ..."."""
    counts = [0] * len(SUB_CATEGORIES)
    text = _category_text(completion, category)
    if text is None or text.startswith("No"):
        return counts
    lines = re.findall(r"\([a-f]\) .*", text)
    prefixes = [f"({letter}) " for letter in "abcdef"]
    if not lines:  # some templates number the sub-categories instead
        lines, prefixes = re.findall(r"\([1-6]\) .*", text), [f"({n}) " for n in range(1, 7)]
    for position, prefix in enumerate(prefixes):
        for line in sorted(lines):
            if line.startswith(prefix):
                number = re.search(r"(?<=: )\b\d+\b(?=\.)", line)
                if number:
                    counts[position] = int(number.group(0))
    return counts


def matched_findings(completion: str) -> int:
    """The number of matched findings; 0 where the category is missing, empty or "No ..."."""
    text = _category_text(completion, MATCHED)
    if text is None or text.startswith("No"):
        return 0
    number = re.match(r"\b\d+\b(?=\.)", text)
    return int(number.group(0)) if number else 0


@dataclass(frozen=True)
class GreenAnalysis:
    """One report's parsed GREEN analysis."""

    significant: tuple[int, ...]
    insignificant: tuple[int, ...]
    matched: int

    @property
    def score(self) -> float:
        if self.matched == 0:
            return 0.0
        return self.matched / (self.matched + sum(self.significant))


def parse_completion(completion: str) -> GreenAnalysis:
    """Counts of a GREEN completion (cleaned first)."""
    text = clean_completion(completion)
    return GreenAnalysis(tuple(error_counts(text, SIGNIFICANT)), tuple(error_counts(text, INSIGNIFICANT)),
                         matched_findings(text))


Generator = Callable[[Sequence[str]], list[str]]  # prompts -> completions


class GreenMetric:
    """GREEN per report, mean over reports; also the mean count of each significant error type."""

    def __init__(self, generate: Generator, model_label: str = "a GREEN model") -> None:
        self.generate = generate
        self.spec = MetricSpec("GREEN", f"GREEN (green_score rules, reimplemented) with {model_label}",
                               "the GREEN prompt, greedy decoding", "as written", "mean over reports")

    @classmethod
    def from_model(cls, folder: str | Path, device: str = "auto", batch_size: int = 4) -> GreenMetric:
        model = GreenModel(folder, device=device, batch_size=batch_size)
        return cls(model.generate, Path(folder).name)

    def item_stats(self, predictions: Sequence[str], references: Sequence[str]) -> list[GreenAnalysis]:
        check_pairs(predictions, references)
        prompts = [green_prompt(r, p) for p, r in zip(predictions, references)]
        completions = self.generate(prompts)
        if len(completions) != len(prompts):
            raise RuntimeError(f"GREEN model gave {len(completions)} completions for {len(prompts)} prompts")
        return [parse_completion(c) for c in completions]

    def aggregate(self, stats: Sequence[GreenAnalysis]) -> dict[str, float]:
        scores = {"GREEN": mean([s.score for s in stats])}
        for k, name in enumerate(SUB_CATEGORIES):
            scores[f"GREEN errors: {name[4:]}"] = mean([s.significant[k] for s in stats])
        return scores


class GreenModel:
    """A local GREEN model folder (transformers causal LM with a chat template); never downloads."""

    def __init__(self, folder: str | Path, device: str = "auto", batch_size: int = 4) -> None:
        self.folder = Path(folder)
        if not (self.folder / "config.json").is_file():
            raise MetricUnavailable(f"GREEN: {self.folder} is not a model folder (no config.json); "
                                    "place a GREEN model there, e.g. StanfordAIMI/GREEN-RadLlama2-7b")
        if not any(self.folder.glob("*.safetensors")) and not any(self.folder.glob("*.bin")):
            raise MetricUnavailable(f"GREEN: {self.folder} has no weights (*.safetensors)")
        self.device, self.batch_size = device, batch_size
        self._loaded = None

    def _load(self):
        if self._loaded is None:
            from transformers import AutoModelForCausalLM, AutoTokenizer

            from napari_radreport.engine.device import resolve_device, resolve_dtype

            device = resolve_device(self.device)
            tokenizer = AutoTokenizer.from_pretrained(self.folder, local_files_only=True, padding_side="left")
            tokenizer.chat_template = CHAT_TEMPLATE
            tokenizer.pad_token = tokenizer.eos_token
            model = AutoModelForCausalLM.from_pretrained(
                self.folder, local_files_only=True, dtype=resolve_dtype(device, "auto")).to(device).eval()
            self._loaded = (tokenizer, model, device)
        return self._loaded

    def generate(self, prompts: Sequence[str], max_tokens: int = MAX_TOKENS) -> list[str]:
        """Greedy completions of the prompts, in batches, decoded without the prompt."""
        import torch

        tokenizer, model, device = self._load()
        completions: list[str] = []
        for start in range(0, len(prompts), self.batch_size):
            chats = [
                tokenizer.apply_chat_template([{"from": "human", "value": p}, {"from": "gpt", "value": ""}],
                                              tokenize=False, add_generation_prompt=True)  # as the authors
                for p in prompts[start : start + self.batch_size]]
            batch = tokenizer(chats, return_tensors="pt", padding=True, truncation=True,
                              max_length=max_tokens, add_special_tokens=False).to(device)
            with torch.inference_mode():
                out = model.generate(**batch, do_sample=False, max_length=max_tokens,
                                     pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
            new = out[:, batch["input_ids"].shape[1] :]
            completions.extend(tokenizer.batch_decode(new, skip_special_tokens=True))
        return completions
