"""Evaluation protocols in one registry: evaluate() and ``avssl eval`` run whatever it holds, the frozen-feature
protocols of one call share one extraction, and mistakes stop the call before any protocol runs."""
from __future__ import annotations

import json
import os

import pytest
from tiny import tiny_overrides

from avssl.config import load_config
from avssl.errors import UserError
from avssl.eval import PROTOCOLS, available_protocols, evaluate

CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "configs", "demo", "supervised_tiny.yaml")


def test_the_registry_holds_every_protocol_in_a_fixed_order():
    assert available_protocols() == ["linear", "knn", "folds", "layerwise", "finetune", "retrieval", "test"]
    with pytest.raises(KeyError, match="unknown evaluation protocol 'lnear'.*'linear'"):
        PROTOCOLS.get("lnear")


def test_frozen_protocols_share_one_extraction_per_part(synth_corpus, tmp_path, monkeypatch):
    from avssl.eval import features

    calls = []
    real = features.extract_features
    monkeypatch.setattr(features, "extract_features", lambda *a, **kw: calls.append(kw["modality"]) or real(*a, **kw))
    cfg = load_config(overrides=tiny_overrides(synth_corpus, tmp_path, **{"eval.linear_epochs": 5}))
    rows = evaluate(cfg, None, protocols=["linear", "knn"], progress=False)
    assert [r["protocol"] for r in rows] == ["linear", "knn"] and calls == ["video", "video"]  # train and val, once
    assert all(r["encoder"] == "random init" and 0.0 <= r["video_top1"] <= 1.0 and r["wall_s"] > 0 for r in rows)


def test_a_registered_protocol_runs_from_evaluate_and_the_cli(synth_corpus, tmp_path, monkeypatch):
    from avssl.apps.cli import main

    def echo(cfg, checkpoint, **opts):
        return [{"encoder": opts["name"] or "random init", "protocol": "echo", "seed": cfg.seed}]

    monkeypatch.setitem(PROTOCOLS._builders, "echo", echo)
    cfg = load_config(overrides=tiny_overrides(synth_corpus, tmp_path, seed=3))
    assert evaluate(cfg, None, protocols=["echo"], name="x")[0] == {"encoder": "x", "protocol": "echo", "seed": 3,
                                                                    "wall_s": pytest.approx(0, abs=5)}
    assert main(["eval", *["--protocol", "echo", "--out", str(tmp_path / "ev")], CONFIG,
                 *tiny_overrides(synth_corpus, tmp_path, seed=3)]) == 0
    rows = json.loads((tmp_path / "ev" / "results.json").read_text())["rows"]
    assert [(r["protocol"], r["seed"]) for r in rows] == [("echo", 3)]


def test_mistakes_stop_the_call_before_any_protocol_runs(synth_corpus, tmp_path, monkeypatch):
    ran = []
    monkeypatch.setitem(PROTOCOLS._builders, "linear", lambda *a, **kw: ran.append("linear") or [])
    cfg = load_config(overrides=tiny_overrides(synth_corpus, tmp_path))
    with pytest.raises(UserError, match="--protocol retrieval needs --checkpoint of an audio-visual method"):
        evaluate(cfg, None, protocols=["linear", "retrieval"])
    with pytest.raises(UserError, match=r"--protocol test needs --checkpoint of a fine-tuned model \(avssl finetune\)"):
        evaluate(cfg, None, protocols=["linear", "test"])
    with pytest.raises(KeyError, match="unknown evaluation protocol 'knnn'"):
        evaluate(cfg, None, protocols=["linear", "knnn"])
    assert ran == []
