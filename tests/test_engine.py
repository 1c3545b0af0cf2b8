"""The engine with tiny random-weight models on real studies: streaming, Stop, caches, tasks, faults."""

from __future__ import annotations

import gc
import threading
import time
import weakref

import pytest

torch = pytest.importorskip("torch")

from napari_radreport import load_study  # noqa: E402
from napari_radreport.engine import (  # noqa: E402
    Engine,
    EngineBusy,
    EngineError,
    Finished,
    GenerationSettings,
    OutOfScope,
    SectionStarted,
    Token,
)
from napari_radreport.engine import device as dev  # noqa: E402
from napari_radreport.engine.engine import default_model  # noqa: E402
from napari_radreport.modeling.processor import InputError  # noqa: E402
from napari_radreport.modeling.prompt_spec import CT_RATE_LABELS  # noqa: E402


@pytest.fixture(scope="module")
def abdomen(abdomen_nifti):
    return load_study(abdomen_nifti)


@pytest.fixture()
def engine(tiny_ct_model):
    engine = Engine()
    engine.load(tiny_ct_model)
    yield engine
    engine.shutdown()


def _greedy_reference(engine, study, question, n):
    """model.generate from transformers on the same prompt: the ids our loop must reproduce."""
    loaded = engine.runner.loaded
    inputs = loaded.inputs(study, question)
    out = loaded.model.generate(**inputs, max_new_tokens=n, do_sample=False)
    return out[0, inputs["input_ids"].shape[1]:].tolist()


def test_tokens_stream_one_by_one_and_match_transformers_generate(engine, abdomen):
    events = []
    done = engine.ask(abdomen, "Is there a pleural effusion?", settings=GenerationSettings(max_new_tokens=12),
                      on_event=events.append)
    tokens = [e for e in events if isinstance(e, Token)]
    assert [t.count for t in tokens] == list(range(1, done.n_tokens + 1))
    assert "".join(t.text for t in tokens) == done.text
    reference = _greedy_reference(engine, abdomen, "Is there a pleural effusion?", 12)
    assert [t.token_id for t in tokens] == reference[:len(tokens)]
    assert done.stop_reason == ("length" if len(tokens) == 12 else "eos")


def test_stop_takes_effect_before_the_next_step(engine, abdomen):
    stop = threading.Event()

    def on_event(event):
        if isinstance(event, Token) and event.count == 4:
            stop.set()

    done = engine.ask(abdomen, "Is there a lung nodule?", settings=GenerationSettings(max_new_tokens=200),
                      on_event=on_event, stop=stop)
    assert done.stop_reason == "stopped" and done.n_tokens == 4


def test_stop_from_another_thread_ends_a_background_job(engine, abdomen):
    slow = engine.runner.model.language_model.register_forward_pre_hook(lambda *a: time.sleep(0.01))
    try:
        job = engine.start("ask", abdomen, "Is there a lung nodule?",
                           settings=GenerationSettings(max_new_tokens=2000))
        seen = 0
        for event in job.events(timeout=30):
            if isinstance(event, Token):
                seen = event.count
                if seen == 3:
                    job.stop()
        result = job.result(timeout=30)
    finally:
        slow.remove()
    assert result.stop_reason == "stopped" and 3 <= result.n_tokens <= 5
    assert not job.running


def test_an_error_inside_generation_reaches_the_caller_and_the_engine_recovers(engine, abdomen):
    calls = []

    def fail_on_third(*_args):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("decoder exploded at step 3")

    hook = engine.runner.model.language_model.register_forward_pre_hook(fail_on_third)
    job = engine.start("ask", abdomen, "Is there a lung nodule?",
                       settings=GenerationSettings(max_new_tokens=10))
    with pytest.raises(RuntimeError, match="decoder exploded at step 3"):
        job.result(timeout=30)
    hook.remove()
    again = engine.ask(abdomen, "Is there a lung nodule?", settings=GenerationSettings(max_new_tokens=3))
    assert again.n_tokens


def test_a_second_request_reuses_the_encoded_image(engine, abdomen):
    engine.ask(abdomen, "Is there a lung nodule?", settings=GenerationSettings(max_new_tokens=2))
    engine.report(abdomen, settings=GenerationSettings(max_new_tokens=2))
    engine.diagnose(abdomen)
    assert engine.runner.encodings == 1
    engine.ask(load_study(abdomen.extra["input"]), "Is there a lung nodule?",
               settings=GenerationSettings(max_new_tokens=2))  # the same file opened again
    assert engine.runner.encodings == 1


def test_a_follow_up_runs_only_its_new_tokens_and_answers_as_from_scratch(engine, abdomen, tiny_ct_model):
    settings = GenerationSettings(max_new_tokens=8)
    first = engine.ask(abdomen, "Is there a pleural effusion?", settings=settings)
    history = [("Is there a pleural effusion?", first.text)]
    follow = engine.ask(abdomen, "Which side?", history=history, settings=settings)
    full_prompt = len(engine.runner.prompt(abdomen, "Which side?", history)[0])
    assert follow.timings["prefill_tokens"] <= 4 < full_prompt  # the answer's last token + "which side ?"
    fresh = Engine()
    fresh.load(tiny_ct_model)
    again = fresh.ask(abdomen, "Which side?", history=history, settings=settings)
    assert again.timings["prefill_tokens"] == full_prompt
    assert again.text == follow.text and again.n_tokens == follow.n_tokens


def test_diagnosis_on_the_shared_prefix_equals_eighteen_separate_passes(engine, abdomen):
    probabilities = engine.diagnose(abdomen)
    assert list(probabilities) == list(CT_RATE_LABELS)
    runner = engine.runner
    yes, no = engine._variants("Yes"), engine._variants("No")
    for label in CT_RATE_LABELS:
        ids, _ = runner.prompt(abdomen, f"Does this image show signs of {label.lower()}?")
        features = runner.image_features(abdomen)
        with torch.no_grad():
            logits = runner.model(input_ids=torch.tensor([ids]), image_features=features).logits[0, -1]
        logp = torch.log_softmax(logits, -1)
        p_yes, p_no = logp[yes].exp().sum(), logp[no].exp().sum()
        assert probabilities[label] == pytest.approx(float(p_yes / (p_yes + p_no)), abs=1e-5)


def test_diagnosis_answers_only_the_labels_the_model_declares_in_its_own_spelling(engine, abdomen):
    with pytest.raises(EngineError) as refused:
        engine.diagnose(abdomen, ["Lung nodule", "Pneumothorax", "Fracture"])  # CheXpert's, not CT-RATE's
    message = str(refused.value)
    assert "does not declare the label(s) Pneumothorax, Fracture;" in message and "\n" not in message
    assert message.endswith(", ".join(CT_RATE_LABELS)) and "Lung nodule," not in message.split(";")[0]
    every = engine.diagnose(abdomen)
    asked = engine.diagnose(abdomen, ["lung NODULE", " pleural effusion", "Lung nodule"])
    assert list(asked) == ["Lung nodule", "Pleural effusion"]
    assert asked == pytest.approx({label: every[label] for label in asked}, abs=1e-6)


def test_diagnose_on_the_command_line_refuses_an_undeclared_label_in_one_line(tiny_ct_model, abdomen_nifti,
                                                                              capsys):
    from napari_radreport.cli import main

    assert main(["diagnose", str(abdomen_nifti), "--model", str(tiny_ct_model),
                 "--labels", "Hiatal hernia,Pneumothorax"]) == 1
    printed = capsys.readouterr()
    assert printed.out == ""
    last = printed.err.strip().splitlines()[-1]
    assert last.startswith("radreport: error: ")
    assert "tiny-ct does not declare the label(s) Pneumothorax; it answers only for its own: Medical" in last
    assert main(["diagnose", str(abdomen_nifti), "--model", str(tiny_ct_model),
                 "--labels", "hiatal hernia"]) == 0
    assert capsys.readouterr().out.startswith("Hiatal hernia")


def test_multiple_choice_answers_with_one_of_the_offered_letters(engine, abdomen):
    choice = engine.choose(abdomen, "Where is the nodule?", ["left lung", "right lung", "both lungs"])
    assert set(choice.probabilities) == {"A", "B", "C"} and choice.letter in "ABC"
    assert sum(choice.probabilities.values()) == pytest.approx(1.0)
    assert choice.probabilities[choice.letter] == max(choice.probabilities.values())
    with pytest.raises(ValueError, match="2 to 4 choices"):
        engine.choose(abdomen, "Where?", ["a", "b", "c", "d", "e"])


@pytest.fixture()
def words_engine(tiny_ct_model, tmp_path):
    """The tiny model with ``prompt.choice_answer: "text"`` (the spec is read once, at load)."""
    from tiny_models import with_prompt

    engine = Engine()
    engine.load(with_prompt(tiny_ct_model, tmp_path / "words", choice_answer="text"))
    yield engine
    engine.shutdown()


def test_multiple_choice_in_words_compares_each_options_whole_answer(words_engine, abdomen):
    from napari_radreport.engine.prompts import choice_prompt

    engine = words_engine
    runner = engine.runner
    choices = ["left lung", "right lung", "both lungs"]
    choice = engine.choose(abdomen, "Where is the nodule?", choices)
    tokenizer, features = runner.loaded.tokenizer, runner.image_features(abdomen)
    tasks = runner.family.prompt_spec.tasks
    prompt, _ = runner.prompt(abdomen, choice_prompt(tasks, "Where is the nodule?", choices))
    totals = []
    for text in choices:  # one whole forward pass per option, from scratch
        answer = tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        with torch.no_grad():
            ids = torch.tensor([prompt + answer])
            logits = runner.model(input_ids=ids, image_features=features).logits[0]
        logp = torch.log_softmax(logits.float(), -1)
        totals.append(sum(float(logp[len(prompt) - 1 + j, t]) for j, t in enumerate(answer)))
    expected = torch.softmax(torch.tensor(totals), 0).tolist()
    assert [choice.probabilities[letter] for letter in "ABC"] == pytest.approx(expected, abs=1e-5)
    assert choice.letter == "ABC"[max(range(3), key=expected.__getitem__)]


def test_a_guided_report_is_written_from_the_request_and_the_models_own_diagnosis(engine, abdomen,
                                                                                  tiny_ct_model, tmp_path):
    from napari_radreport.engine.prompts import guided_section_prompt, section_prompt

    from tiny_models import with_prompt

    settings = GenerationSettings(max_new_tokens=6)
    plain_request = section_prompt(engine.runner.family.prompt_spec.tasks, "findings", "ct")
    unguided = engine.report(abdomen, sections=("findings",), settings=settings).sections[0][1]
    engine.load(with_prompt(tiny_ct_model, tmp_path / "guided", report_guidance="diagnosis"))  # same weights
    found = engine.diagnose(abdomen)
    positives = [label for label in engine.info.labels if found[label] >= 0.5]
    guided = engine.report(abdomen, sections=("findings",), settings=settings).sections[0][1]
    request = guided_section_prompt(plain_request, positives)
    expected = engine.ask(abdomen, request, settings=settings).text.strip()
    assert guided == expected
    assert guided != unguided  # the random model writes something else once the prompt names the findings
    stop = threading.Event()
    stop.set()
    assert engine.report(abdomen, settings=settings, stop=stop).stop_reason == "stopped"


def test_a_regional_report_has_a_section_per_region_then_the_impression(engine, abdomen):
    events = []
    result = engine.report(abdomen, regions=["chest", "abdomen", "pelvis"],
                           settings=GenerationSettings(max_new_tokens=3), on_event=events.append)
    titles = [e.title for e in events if isinstance(e, SectionStarted)]
    assert titles == ["Findings (chest)", "Findings (abdomen)", "Findings (pelvis)", "Impression"]
    assert [t for t, _ in result.sections] == titles
    assert result.text.startswith("Findings (chest):\n")


def test_sampling_is_reproducible_with_its_seed(engine, abdomen):
    def run(seed):
        s = GenerationSettings(max_new_tokens=15, do_sample=True, temperature=1.5, top_p=0.95, seed=seed)
        return engine.ask(abdomen, "Describe the lungs.", settings=s).text

    assert run(1) == run(1)
    assert len({run(1), run(2), run(3)}) > 1


def test_a_second_job_while_one_runs_is_refused(engine, abdomen):
    slow = engine.runner.model.language_model.register_forward_pre_hook(lambda *a: time.sleep(0.01))
    try:
        job = engine.start("ask", abdomen, "Is there a nodule?",
                           settings=GenerationSettings(max_new_tokens=500))
        with pytest.raises(EngineBusy, match="busy"):
            engine.start("report", abdomen)
        with pytest.raises(EngineBusy):
            engine.ask(abdomen, "Is there a nodule?")
        job.stop()
        assert isinstance(job.result(timeout=30), Finished)
    finally:
        slow.remove()
    assert engine.start("ask", abdomen, "Is there a nodule?",
                        settings=GenerationSettings(max_new_tokens=2)).result(timeout=30).n_tokens >= 1


def test_a_model_that_cannot_take_the_input_says_so(engine, tiny_xray_model, shared_data):
    xrays = load_study(shared_data / "xray" / "nih_00000001_000_cardiomegaly.png")
    with pytest.raises(OutOfScope, match="the model reads CT volumes; this study is radiographs"):
        engine.ask(xrays, "Is there a nodule?")
    engine.allow_out_of_scope = True  # an engineer's override cannot make a CT model read radiographs
    with pytest.raises(OutOfScope, match="this study is radiographs.$"):
        engine.ask(xrays, "Is there a nodule?")
    engine.allow_out_of_scope = False
    engine.load(tiny_xray_model)
    answer = engine.ask(xrays, "Is there a nodule?", settings=GenerationSettings(max_new_tokens=2))
    assert answer.n_tokens >= 1
    too_many = load_study(sorted((shared_data / "xray" / "open_access_cc_by").iterdir()))
    with pytest.raises(InputError, match="at most 4 radiographs; the study has 5"):
        engine.report(too_many)


def test_unloading_frees_the_model(tiny_ct_model):
    engine = Engine()
    engine.load(tiny_ct_model)
    ref = weakref.ref(engine.runner.model)
    engine.unload()
    gc.collect()
    assert ref() is None and not engine.loaded
    with pytest.raises(EngineError, match="no model is loaded"):
        engine.ask(None, "anything")


def test_a_failed_load_leaves_the_engine_usable(tmp_path, tiny_ct_model):
    from napari_radreport.modeling.checkpoints import CheckpointError

    engine = Engine()
    with pytest.raises(CheckpointError, match="does-not-exist"):
        engine.load(tmp_path / "does-not-exist")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text("{ not json")
    with pytest.raises(Exception, match="config.json"):
        engine.load(tmp_path / "broken")
    assert engine.load(tiny_ct_model).name == "tiny-ct"


def test_out_of_memory_is_explained_and_the_caches_are_freed(engine, abdomen):
    def oom(*_args):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    engine.ask(abdomen, "Is there a nodule?", settings=GenerationSettings(max_new_tokens=2))
    hook = engine.runner.model.language_model.register_forward_pre_hook(oom)
    with pytest.raises(EngineError, match="out of memory on cpu during ask; caches were freed"):
        engine.ask(abdomen, "Is there a nodule?")
    hook.remove()
    assert not engine.runner._features and not engine.runner._prefixes
    assert engine.ask(abdomen, "Is there a nodule?", settings=GenerationSettings(max_new_tokens=2)).n_tokens


def test_device_and_dtype_choices():
    assert dev.resolve_device("cpu") == "cpu" and dev.resolve_dtype("cpu") == torch.float32
    if not torch.cuda.is_available():
        assert dev.resolve_device("auto") in ("cpu", "mps")
        with pytest.raises(dev.DeviceError, match="no usable CUDA GPU"):
            dev.resolve_device("cuda")
    with pytest.raises(dev.DeviceError, match="unknown device 'tpu'"):
        dev.resolve_device("tpu")
    with pytest.raises(dev.DeviceError, match="float16 on the CPU"):
        dev.resolve_dtype("cpu", "float16")


def test_a_model_that_will_not_fit_is_warned_about_before_loading(tiny_ct_model, monkeypatch):
    need = dev.weights_bytes(tiny_ct_model, torch.float32)
    assert need > 100_000  # counted from the safetensors header
    assert dev.memory_warning(tiny_ct_model, "cpu", torch.float32) is None
    monkeypatch.setattr(dev, "free_bytes", lambda _device: need // 2)
    events = []
    info = Engine().load(tiny_ct_model, on_event=events.append)
    assert any("may fail" in w for w in info.warnings)
    assert any("needs about" in getattr(e, "message", "") for e in events)


def test_a_repetition_penalty_breaks_loops_and_special_tokens_never_appear(engine, abdomen):
    def ids(**kwargs):
        events = []
        engine.ask(abdomen, "Describe the lungs.", settings=GenerationSettings(max_new_tokens=120, **kwargs),
                   on_event=events.append)
        return [e.token_id for e in events if isinstance(e, Token)]

    plain, penalised = ids(), ids(repetition_penalty=2.0)
    assert len(set(penalised)) / len(penalised) > len(set(plain)) / len(plain)
    tokenizer = engine.runner.loaded.tokenizer
    banned = {engine.runner.image_token_id, tokenizer.bos_token_id, tokenizer.pad_token_id,
              tokenizer.unk_token_id}
    assert not banned & set(plain + penalised)


def test_every_task_and_call_runs_on_the_engines_one_thread_which_shutdown_ends(tiny_ct_model, abdomen):
    engine, seen = Engine(), set()

    def note(_event):
        seen.add(threading.current_thread())

    engine.load(tiny_ct_model, on_event=note)
    engine.report(abdomen, settings=GenerationSettings(max_new_tokens=3), on_event=note)
    engine.diagnose(abdomen, CT_RATE_LABELS[:2], on_event=note)
    job = engine.start("ask", abdomen, "Is there a lung nodule?",
                       settings=GenerationSettings(max_new_tokens=3), on_event=note)
    job.result(30)
    seen.add(engine.call(threading.current_thread))
    assert len(seen) == 1 and threading.current_thread() not in seen
    assert engine.thread_alive and engine.shutdown(10) and not engine.thread_alive
    assert engine.call(threading.current_thread) not in seen  # a task after shutdown starts a new thread
    engine.shutdown(10)


def test_a_text_stream_cut_inside_a_character_ends_with_what_it_streamed():
    """The demo model's byte-level tokenizer (trained on ASCII phantom texts) writes "é" as two byte tokens:
    cut after the first, the text is what streamed (no U+FFFD), and the whole character streams once its
    second byte comes."""
    from transformers import AutoTokenizer

    from napari_radreport.engine.decoding import TextStream

    if default_model() is None:
        pytest.skip("this checkout has no napari_radreport/demo_model")
    tokenizer = AutoTokenizer.from_pretrained(str(default_model()))
    ids = tokenizer("aé", add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(ids[:-1]).endswith("\ufffd")  # the cut falls inside the character
    cut = TextStream(tokenizer)
    streamed = "".join(cut.push(i) for i in ids[:-1])
    assert cut.text() == streamed and "\ufffd" not in streamed
    whole = TextStream(tokenizer)
    assert "".join(whole.push(i) for i in ids) == whole.text() == "aé"
