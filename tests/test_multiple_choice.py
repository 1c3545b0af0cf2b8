"""Multiple choice answered in words (``prompt.choice_answer: "text"``) by a chat model: each option is scored
as the whole turn the model would write, ended where its generation ends (Gemma 3's <end_of_turn>), checked
against transformers' model on the chat template's own rendering of that turn."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from napari_radreport import load_study  # noqa: E402
from napari_radreport.engine import Engine  # noqa: E402
from napari_radreport.engine.prompts import choice_prompt  # noqa: E402

from tiny_models import write_tiny_gemma3  # noqa: E402


@pytest.fixture(scope="module")
def gemma_in_words(tmp_path_factory):
    """A tiny Gemma 3 (MedGemma family) that answers multiple choice with the option's words."""
    return write_tiny_gemma3(tmp_path_factory.mktemp("models") / "gemma-words",
                             config_sections={"prompt": {"choice_answer": "text"}})


@pytest.fixture(scope="module")
def png(shared_data):
    return shared_data / "xray" / "nih_00000001_000_cardiomegaly.png"


def test_an_option_in_words_is_scored_as_the_models_whole_turn_ended_where_generation_ends(gemma_in_words,
                                                                                            png):
    from PIL import Image
    from transformers import AutoProcessor, Gemma3ForConditionalGeneration

    model = Gemma3ForConditionalGeneration.from_pretrained(str(gemma_in_words)).eval()
    processor = AutoProcessor.from_pretrained(str(gemma_in_words))
    stops = model.generation_config.eos_token_id  # where generation ends: <eos> and <end_of_turn>
    end_of_turn = processor.tokenizer.convert_tokens_to_ids("<end_of_turn>")
    assert end_of_turn in stops and processor.tokenizer.eos_token_id != end_of_turn
    question, options = "Where is the heart?", ["left", "both", "none"]
    engine = Engine()
    engine.load(gemma_in_words, device="cpu")
    try:
        assert engine.runner.family.prompt_spec.choice_answer == "text"
        study = load_study(png)
        choice = engine.choose(study, question, options)
        text = choice_prompt(engine.runner.family.prompt_spec.tasks, question, options)
        scores = engine.call(lambda: engine.runner.answer_logprobs(study, text, options))
    finally:
        engine.shutdown()
    user = {"role": "user", "content": [{"type": "image", "image": Image.open(png)},
                                        {"type": "text", "text": text}]}
    prompt = processor.apply_chat_template([user], add_generation_prompt=True, tokenize=True,
                                           return_dict=True, return_tensors="pt")["input_ids"][0].tolist()
    totals = []
    for option in options:  # the template's own turn for each option, run whole by transformers
        turn = {"role": "assistant", "content": [{"type": "text", "text": option}]}
        inputs = processor.apply_chat_template([user, turn], tokenize=True, return_dict=True,
                                               return_tensors="pt")
        ids = inputs["input_ids"][0].tolist()
        answer = processor.tokenizer(option, add_special_tokens=False)["input_ids"]
        assert ids[:len(prompt)] == prompt and ids[len(prompt):len(prompt) + len(answer)] == answer
        assert ids[len(prompt) + len(answer)] == end_of_turn  # how the template ends the model's turn
        with torch.no_grad():
            logp = torch.log_softmax(model(**inputs).logits[0].float(), -1)
        said = sum(float(logp[len(prompt) - 1 + j, t]) for j, t in enumerate(answer))
        ended = float(logp[len(prompt) + len(answer) - 1, stops].logsumexp(0))  # then generation stops
        totals.append(said + ended)
    torch.testing.assert_close(scores, torch.tensor(totals), atol=1e-4, rtol=0)
    expected = torch.softmax(torch.tensor(totals), 0).tolist()
    assert [choice.probabilities[letter] for letter in "ABC"] == pytest.approx(expected, abs=1e-5)
    assert choice.letter == "ABC"[max(range(3), key=expected.__getitem__)]
