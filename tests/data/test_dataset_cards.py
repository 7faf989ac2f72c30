"""The dataset cards' "weights that fit" entries name real configs, registered encoders and known formats,
and their overrides turn the config's encoder into the one the weights are for."""
from __future__ import annotations

import glob
import os
import re

import pytest
import yaml

from avssl.config import load_config
from avssl.models import FORMATS, available_encoders

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CARDS = sorted(glob.glob(os.path.join(ROOT, "datasets", "*", "card.yaml")))


@pytest.mark.parametrize("card", CARDS, ids=[os.path.basename(os.path.dirname(c)) for c in CARDS])
def test_weights_that_fit(card):
    entries = yaml.safe_load(open(card))["weights_that_fit"]
    for e in entries:
        assert set(e) <= {"weights", "format", "encoder", "trained_on", "configs", "overrides", "note"}, e
        formats = re.findall(r"[a-z_]+", e["format"])
        assert any(f in FORMATS for f in formats), e["format"]
        encoders = [n.strip() for n in e["encoder"].split("/")]
        assert set(encoders) <= set(available_encoders()), encoders
        for config in e["configs"]:
            assert os.path.exists(os.path.join(ROOT, config)), config
            overrides = [o.replace("FILE", "weights.pth") for o in e["overrides"].split()]
            cfg = load_config(os.path.join(ROOT, config), overrides)
            assert cfg.model.video.name == encoders[0], (config, overrides)
    if os.path.basename(os.path.dirname(card)) in ("ucf101", "hmdb51"):
        assert {c for e in entries for c in e["configs"]} == {
            f"configs/finetune/{os.path.basename(os.path.dirname(card))}_{n}f.yaml" for n in (8, 32)}
