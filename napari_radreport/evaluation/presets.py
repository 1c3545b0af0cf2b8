"""The named evaluation presets: which pairs each seed paper scores, with which exact computations.

- ``rrg24`` (RRG24 / Gla-AI4BioMed): Findings and Impression separately; BLEU-4 (pycocoevalcap), ROUGE-L
  (Porter stemmer), BERTScore, F1-RadGraph (simple, partial, complete), F1-CheXbert.
- ``m3d`` (M3D-LaMed benchmark; also what E3D-GPT reports): the Findings text per study; BLEU-1 (13a),
  ROUGE-1 (no stemming), METEOR (NLTK), BERT-F1, each averaged over reports.
- ``amos-mm`` (AMOS-MM 2024): GREEN per region (chest, abdomen, pelvis; a region with an empty reference is
  skipped) and multiple-choice VQA accuracy.
- ``diagnosis`` (E3D-GPT's abnormality table): per-label and macro balanced accuracy, precision, recall,
  F1, AUROC.

``grounding`` runs a model instead of reading predictions: ``iter_grounding_cases`` grounds each study's
report (the model's own, or the record's reference sentences) with ``Engine.ground`` and pairs it with the
record's truth; ``evaluation/grounding.py`` scores it.

Model-based metrics take local weights (:class:`ModelPaths`); without them they are reported as not
computed, with the message saying what to give.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from napari_radreport.data.manifest import ManifestRecord
from napari_radreport.engine.prompts import REGIONS
from napari_radreport.evaluation.scoring import Block, MetricFactory

PRESETS = ("rrg24", "m3d", "amos-mm", "diagnosis")
DEFAULT_SECTIONS = {"rrg24": ("findings", "impression"), "m3d": ("findings",)}
GROUNDING_TEXTS = ("generated", "reference")  # what the grounding preset grounds: the model's report, or the
# record's own text (its mask sentences when it has them, else its Findings and Impression)


@dataclass(frozen=True)
class ModelPaths:
    """Local weights and data of the model-based metrics (``None``: not given)."""

    wordnet: str | None = None
    green: str | None = None
    radgraph: str | None = None
    chexbert: str | None = None
    chexbert_bert: str | None = None
    bertscore: str | None = None
    minilm: bool = False  # also the offline MiniLM BERTScore-style score, under its own name
    device: str = "auto"


def text_metrics(preset: str, paths: ModelPaths) -> list[tuple[str, MetricFactory]]:
    """(name, factory) for the report metrics of ``rrg24`` or ``m3d``."""
    from napari_radreport.evaluation import lexical, model_metrics

    if preset == "rrg24":
        factories = [("BLEU-4", lambda: lexical.CocoBleu(4)),
                     ("ROUGE-L", lambda: lexical.Rouge("L", stem=True)),
                     ("BERTScore", lambda: model_metrics.bertscore("rrg24", paths)),
                     ("F1-RadGraph", lambda: model_metrics.radgraph(paths)),
                     ("F1-CheXbert", lambda: model_metrics.chexbert(paths))]
    elif preset == "m3d":
        factories = [("BLEU-1", lambda: lexical.SentenceBleu(1)),
                     ("ROUGE-1", lambda: lexical.Rouge(1, stem=False)),
                     ("METEOR", lambda: lexical.Meteor(paths.wordnet)),
                     ("BERT-F1", lambda: model_metrics.bertscore("m3d", paths))]
    else:
        raise ValueError(f"preset {preset!r} has no report metrics")
    if paths.minilm:
        factories.append(("MiniLM-BERTScore", lambda: model_metrics.minilm_bertscore(paths)))
    return factories


def _prediction_text(prediction: Mapping | None, key: str) -> str:
    """The predicted text, '' when the study has no prediction or it failed (scored as an empty report)."""
    if not prediction or prediction.get("error"):
        return ""
    return str(prediction.get(key) or "")


def section_block(title: str, records: Sequence[ManifestRecord], predictions: Mapping[str, dict],
                  get_reference, get_prediction, factories,
                  predictions_b: Mapping[str, dict] | None = None) -> Block:
    """Pairs of one text section over the records whose reference is not empty."""
    block = Block(title, [], [], [], factories, [] if predictions_b is not None else None)
    for record in records:
        reference = (get_reference(record) or "").strip()
        if not reference:
            block.skipped["empty reference"] = block.skipped.get("empty reference", 0) + 1
            continue
        block.ids.append(record.id)
        block.references.append(reference)
        block.predictions.append(get_prediction(predictions.get(record.id)))
        if predictions_b is not None:
            block.predictions_b.append(get_prediction(predictions_b.get(record.id)))
    return block


def build_blocks(preset: str, records: Sequence[ManifestRecord], predictions: Mapping[str, dict],
                 paths: ModelPaths, sections: Sequence[str] | None = None,
                 predictions_b: Mapping[str, dict] | None = None) -> list[Block]:
    """The blocks a preset scores, from manifest references and predictions keyed by study id."""
    from napari_radreport.evaluation import model_metrics

    if preset in ("rrg24", "m3d"):
        factories = text_metrics(preset, paths)
        return [section_block(section, records, predictions, lambda r, s=section: getattr(r, s),
                              lambda p, s=section: _prediction_text(p, s), factories, predictions_b)
                for section in (sections or DEFAULT_SECTIONS[preset])]
    if preset == "amos-mm":
        blocks = [section_block(f"region {region}", records, predictions,
                                lambda r, g=region: r.regions.get(g, ""),
                                lambda p, g=region: _prediction_text((p or {}).get("regions"), g),
                                [("GREEN", lambda: model_metrics.green(paths))], predictions_b)
                  for region in REGIONS]
        return [*blocks, vqa_block(records, predictions, predictions_b)]
    if preset == "diagnosis":
        return [diagnosis_block(records, predictions, predictions_b)]
    raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")


def _answers(prediction: Mapping | None, record: ManifestRecord) -> list[str]:
    from napari_radreport.evaluation.vqa import answer_letter

    answers = [] if not prediction or prediction.get("error") else list(prediction.get("answers") or [])
    letters = []
    for i, qa in enumerate(record.qa):
        if not qa.choices:
            continue
        answer = answers[i] if i < len(answers) else {}
        if answer and answer.get("question", qa.question) != qa.question:
            raise ValueError(
                f"{record.id}: answer {i} is to {answer.get('question')!r}, not to {qa.question!r}"
            )
        letters.append(answer_letter(answer) if answer else "")
    return letters


def vqa_block(records: Sequence[ManifestRecord], predictions: Mapping[str, dict],
              predictions_b: Mapping[str, dict] | None = None) -> Block:
    """Every multiple-choice question of the records, answered by letter."""
    from napari_radreport.evaluation.vqa import LETTERS, ChoiceAccuracy

    block = Block("VQA (multiple choice)", [], [], [], [("VQA accuracy", ChoiceAccuracy)],
                  [] if predictions_b is not None else None, unit="questions")
    for record in records:
        letters = _answers(predictions.get(record.id), record)
        letters_b = _answers(predictions_b.get(record.id), record) if predictions_b is not None else None
        for k, qa in enumerate(q for q in record.qa if q.choices):
            block.ids.append(f"{record.id}#{k}")
            block.references.append(LETTERS[qa.answer_index])
            block.predictions.append(letters[k])
            if letters_b is not None:
                block.predictions_b.append(letters_b[k])
    return block


def diagnosis_block(records: Sequence[ManifestRecord], predictions: Mapping[str, dict],
                    predictions_b: Mapping[str, dict] | None = None) -> Block:
    """The records with labels; their predicted probabilities."""
    from napari_radreport.evaluation.diagnosis import DiagnosisMetric

    labelled = [r for r in records if r.labels]
    failed = {r.id for r in labelled for source in (predictions, predictions_b) if source is not None
              and (source.get(r.id) or {}).get("error")}
    scored = [r for r in labelled if r.id not in failed]  # a failed study has no probabilities to score
    labels = sorted({label for r in scored for label in r.labels})
    block = Block("diagnosis", [r.id for r in scored], [], [r.labels for r in scored],
                  [("diagnosis", lambda: DiagnosisMetric(labels))], [] if predictions_b is not None else None)
    for source, target in ((predictions, block.predictions), (predictions_b, block.predictions_b)):
        if source is None:
            continue
        for record in scored:
            prediction = source.get(record.id) or {}
            if "diagnosis" not in prediction:
                raise ValueError(f"{record.id}: the predictions have no diagnosis "
                                 "(run radreport predict --tasks diagnosis)")
            target.append(prediction["diagnosis"])
    if len(labelled) < len(records):
        block.skipped["no labels"] = len(records) - len(labelled)
    if failed:
        block.skipped["prediction failed"] = len(failed)
    return block


class GroundingUnavailable(RuntimeError):
    """The engine has no ``ground`` task (yet)."""


def require_grounding(engine) -> None:
    """Refuse, in one line, an engine (or engine class) that cannot ground."""
    if not callable(getattr(engine, "ground", None)):
        raise GroundingUnavailable("this engine cannot ground yet (napari_radreport.engine.Engine has no "
                                   "ground task)")


def reference_text(record: ManifestRecord) -> str:
    """The text the grounding preset grounds with ``text="reference"``: the record's mask sentences, one per
    sentence, else its Findings and Impression under their headings."""
    sentences = record.masks.get("sentences", []) if record.masks else []
    if sentences:
        return " ".join(s["text"].strip() + ("" if s["text"].strip()[-1:] in ".!?" else ".")
                        for s in sentences)
    parts = [f"Findings: {record.findings.strip()}" if record.findings.strip() else "",
             f"Impression: {record.impression.strip()}" if record.impression.strip() else ""]
    return "\n".join(part for part in parts if part)


def iter_grounding_cases(engine, records: Sequence[ManifestRecord], *,
                         methods: Sequence[str | None] = (None,), text: str = "generated", on_text=None):
    """For each record and method, a ``GroundingCase``: the study's report grounded with ``engine.ground``
    (its ``as_dict`` sentences and study-grid masks) beside the record's truth. One study at a time, so that
    the caller can score and drop the masks before the next one. A method of None is the engine's default,
    named in the case after the method its first location gives."""
    from napari_radreport.data.studies import read_record_study
    from napari_radreport.data.truth import truth_from_record
    from napari_radreport.evaluation.grounding import GroundingCase

    require_grounding(engine)
    if text not in GROUNDING_TEXTS:
        raise ValueError(f"text must be one of {', '.join(GROUNDING_TEXTS)}, got {text!r}")
    for record in records:
        study = read_record_study(record)
        if not study.is_volume:
            raise GroundingUnavailable(f"{record.id}: the grounding evaluation scores locations in a "
                                       "volume's patient space; radiograph locations are not scored yet")
        truth = truth_from_record(record, study)
        options: dict = {}
        if text == "generated":
            report = engine.report(study, sections=("findings", "impression"))
            source = report.text
            if getattr(report, "questions", None):  # what each section answered, for the attribution
                options["questions"] = report.questions
        else:
            source = reference_text(record)
        if on_text is not None:
            on_text(record.id, source)
        for method in methods:
            try:
                grounded = engine.ground(study, source, **options, **({} if method is None else
                                                                        {"method": method}))
            except NotImplementedError as exc:
                raise GroundingUnavailable(f"this engine cannot ground yet ({exc})") from exc
            sentences = [g.as_dict() for g in grounded]
            named = next((s["location"]["method"] for s in sentences if s.get("location")), "default")
            yield GroundingCase(record.id, truth, sentences, [getattr(g, "mask", None) for g in grounded],
                                method or named)
