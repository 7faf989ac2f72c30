"""The batch contract: sample dims per modality, view axes, and the errors that name the layout."""
from __future__ import annotations

import pytest
import torch

from avssl.data.batch import (batch_size, first_view, flatten_views, has_views, layout, sample_ndim, split_views)


def test_sample_dims_and_layouts():
    assert (sample_ndim("video"), sample_ndim("audio"), sample_ndim("image")) == (4, 3, 3)
    assert layout("video") == "B×C×T×H×W" and layout("audio", views=True) == "B×V×1×F×T'"
    with pytest.raises(ValueError, match="unknown modality 'text'.*video, audio, image"):
        sample_ndim("text")


@pytest.mark.parametrize("modality,sample", [("video", (3, 4, 8, 8)), ("audio", (1, 10, 12)), ("image", (3, 8, 8))])
def test_views_are_found_flattened_sample_major_and_split(modality, sample):
    x = torch.arange(2 * 3).float().view(2, 3, *([1] * len(sample))).expand(2, 3, *sample).contiguous()
    assert has_views(x, modality) and not has_views(x[:, 0], modality)
    flat, v = flatten_views(x, modality)
    assert v == 3 and flat.shape == (6, *sample)
    # Row b·V + v is view v of sample b: the value written there is b·3 + v.
    assert flat.flatten(1)[:, 0].tolist() == [0, 1, 2, 3, 4, 5]
    one = x[:, 0]
    assert flatten_views(one, modality) == (one, 1) and first_view(one, modality) is one
    assert torch.equal(first_view(x, modality), one)
    views = split_views(x, modality)
    assert len(views) == 3 and all(torch.equal(views[i], x[:, i]) for i in range(3))


def test_multi_crop_lists_and_errors_name_the_layout():
    crops = [torch.zeros(4, 3, 16, 16), torch.zeros(4, 3, 16, 16), torch.zeros(4, 3, 8, 8)]
    assert has_views(crops, "image") and first_view(crops, "image") is crops[0]
    assert [tuple(v.shape) for v in split_views(crops, "image")] == [(4, 3, 16, 16)] * 2 + [(4, 3, 8, 8)]
    with pytest.raises(ValueError, match=r"view 1 has shape \(3, 3, 16, 16\).*batch size of view 0"):
        split_views([crops[0], torch.zeros(3, 3, 16, 16)], "image")
    with pytest.raises(ValueError, match="cannot be flattened"):
        flatten_views(crops, "image")
    with pytest.raises(ValueError, match=r"a video batch must be B×C×T×H×W or, with views, B×V×C×T×H×W; "
                                         r"got \(2, 3, 8\)"):
        first_view(torch.zeros(2, 3, 8), "video")
    with pytest.raises(ValueError, match=r"^simclr: batch\['audio'\] must be B×1×F×T'"):
        has_views(torch.zeros(2, 3), "audio", who="simclr: batch['audio']")


def test_batch_size_reads_the_first_entry_with_a_batch_axis():
    assert batch_size({"image": [torch.zeros(5, 3, 4, 4)]}) == 5
    assert batch_size({"label": torch.zeros(7)}) == 7 and batch_size({}) == 1
