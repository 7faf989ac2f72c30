"""Heads: layer structure and dimensions, prototype cosine scores and renormalisation, dropout in eval."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from avssl.models.heads import ClassificationHead, PredictionHead, ProjectionHead, PrototypeHead


def _layout(module: nn.Module):
    """[(type name, in, out, has bias)] for Linear; [(type name, features, affine)] for BN; type for others."""
    out = []
    for m in module.layers:
        if isinstance(m, nn.Linear):
            out.append(("Linear", m.in_features, m.out_features, m.bias is not None))
        elif isinstance(m, nn.BatchNorm1d):
            out.append(("BN", m.num_features, m.affine))
        else:
            out.append(type(m).__name__)
    return out


def test_avid_projection_is_linear_relu_linear_and_computes_that():
    torch.manual_seed(0)
    head = ProjectionHead(512, 512, 128, batch_norm=False)
    assert _layout(head) == [("Linear", 512, 512, True), "ReLU", ("Linear", 512, 128, True)]
    x = torch.randn(4, 512)
    l1, l2 = head.layers[0], head.layers[2]
    expected = F.relu(x @ l1.weight.T + l1.bias) @ l2.weight.T + l2.bias
    torch.testing.assert_close(head(x), expected)
    assert head.out_dim == 128


def test_barlow_style_three_layers_with_bn():
    head = ProjectionHead(32, 64, 64, num_layers=3)
    assert _layout(head) == [
        ("Linear", 32, 64, False), ("BN", 64, True), "ReLU",
        ("Linear", 64, 64, False), ("BN", 64, True), "ReLU",
        ("Linear", 64, 64, True),
    ]
    assert head(torch.randn(5, 32)).shape == (5, 64)


def test_last_bn_and_single_layer():
    head = ProjectionHead(16, 32, 8, num_layers=2, last_bn=True, last_bn_affine=False)
    assert _layout(head) == [("Linear", 16, 32, False), ("BN", 32, True), "ReLU", ("Linear", 32, 8, False),
                             ("BN", 8, False)]
    # In training mode a non-affine last BN standardises every output unit over the batch.
    z = head.train()(torch.randn(64, 16))
    torch.testing.assert_close(z.mean(0), torch.zeros(8), atol=1e-5, rtol=0)
    torch.testing.assert_close(z.var(0, unbiased=False), torch.ones(8), atol=1e-3, rtol=0)
    assert _layout(ProjectionHead(16, 999, 8, num_layers=1)) == [("Linear", 16, 8, True)]
    with pytest.raises(ValueError, match="num_layers"):
        ProjectionHead(16, 32, 8, num_layers=0)


def test_prediction_head_structure():
    head = PredictionHead(256, 1024, 256)
    assert _layout(head) == [("Linear", 256, 1024, False), ("BN", 1024, True), "ReLU", ("Linear", 1024, 256, True)]
    assert head(torch.randn(3, 256)).shape == (3, 256)


def test_heads_reject_wrong_feature_size():
    with pytest.raises(ValueError, match=r"B×16 features, got \(3, 15\)"):
        ProjectionHead(16, 32, 8)(torch.randn(3, 15))
    with pytest.raises(ValueError, match="B×16"):
        ClassificationHead(16, 4)(torch.randn(3, 16, 1))


def test_prototype_scores_are_cosine_similarities():
    torch.manual_seed(0)
    head = PrototypeHead(32, 10)
    x = 5 * torch.randn(7, 32)
    scores = head(x)
    assert scores.shape == (7, 10)
    expected = F.cosine_similarity(x[:, None, :], head.weight[None, :, :], dim=2)
    torch.testing.assert_close(scores, expected, atol=1e-5, rtol=1e-5)
    assert scores.abs().max() <= 1 + 1e-6
    # the score of a prototype with itself is 1
    torch.testing.assert_close(head(head.weight.detach()[:3]).diagonal(), torch.ones(3))


def test_prototype_normalize_restores_unit_rows_after_a_step():
    torch.manual_seed(0)
    head = PrototypeHead(16, 6)
    opt = torch.optim.SGD(head.parameters(), lr=1.0)
    head(torch.randn(4, 16)).sum().backward()
    assert head.weight.grad is not None and head.weight.grad.abs().sum() > 0
    opt.step()
    assert not torch.allclose(head.weight.norm(dim=1), torch.ones(6))
    before = head.weight.detach().clone()
    assert head.normalize_() is head
    torch.testing.assert_close(head.weight.norm(dim=1), torch.ones(6))
    # each row keeps its direction
    torch.testing.assert_close(head.weight, before / before.norm(dim=1, keepdim=True))
    assert head(torch.randn(20, 16)).abs().max() <= 1 + 1e-6


def test_classification_head_dropout_only_in_training():
    torch.manual_seed(0)
    head = ClassificationHead(64, 5, dropout=0.5)
    x = torch.randn(8, 64)
    head.eval()
    expected = x @ head.fc.weight.T + head.fc.bias
    torch.testing.assert_close(head(x), expected)
    torch.testing.assert_close(head(x), head(x))
    head.train()
    assert not torch.allclose(head(x), expected)
    assert head(x).shape == (8, 5)
    with pytest.raises(ValueError, match="dropout"):
        ClassificationHead(64, 5, dropout=1.0)
