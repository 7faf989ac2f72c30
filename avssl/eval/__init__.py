"""Evaluation of frozen or fine-tuned encoders: protocols, metrics, feature extraction, kNN, linear probes, reports.

:func:`evaluate` runs protocols of the registry :data:`PROTOCOLS` (``linear``, ``knn``, ``folds``,
``layerwise``, ``finetune``, ``retrieval``, ``test``) and returns their rows. Figures live in :mod:`avssl.eval.plots`
(imported on demand: it needs matplotlib).
"""
from avssl.eval.features import extract_dataset, extract_features, load_features, pool_stage, save_features
from avssl.eval.knn import knn_evaluate, knn_predict
from avssl.eval.linear import LinearProbe, layerwise_linear_probe, linear_evaluate, probe_predict, train_linear_probe
from avssl.eval.metrics import (
    aggregate_labels,
    aggregate_views,
    clip_and_video_metrics,
    confusion_matrix,
    mean_class_accuracy,
    per_class_accuracy,
    top_k_accuracy,
)
from avssl.eval.protocols import PROTOCOLS, available_protocols, encoder_from, evaluate
from avssl.eval.report import print_results_table, write_results_json

__all__ = [
    "PROTOCOLS",
    "available_protocols",
    "encoder_from",
    "evaluate",
    "LinearProbe",
    "aggregate_labels",
    "aggregate_views",
    "clip_and_video_metrics",
    "confusion_matrix",
    "extract_dataset",
    "extract_features",
    "knn_evaluate",
    "knn_predict",
    "layerwise_linear_probe",
    "linear_evaluate",
    "load_features",
    "mean_class_accuracy",
    "per_class_accuracy",
    "pool_stage",
    "print_results_table",
    "probe_predict",
    "save_features",
    "top_k_accuracy",
    "train_linear_probe",
    "write_results_json",
]
