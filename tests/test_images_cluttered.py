"""The cluttered digits: deterministic, labelled like their source digits, varied, and in the datamodule."""
import torch

from avssl.data.images import cluttered_digits, digits


def test_cluttered_digits_are_deterministic_labelled_and_varied():
    x, y = cluttered_digits("test", size=16, copies=2)
    _, src_y = digits("test", size=8)
    assert x.shape == (2 * len(src_y), 3, 16, 16) and x.dtype == torch.uint8
    assert torch.equal(y, src_y.repeat(2))
    x2, _ = cluttered_digits("test", size=16, copies=2)
    assert torch.equal(x, x2)
    assert not torch.equal(x[: len(src_y)], x[len(src_y):])  # two renderings of a digit differ
    assert not torch.equal(x, cluttered_digits("test", size=16, seed=1, copies=2)[0])
    # Colour and brightness vary from image to image (what a random encoder's features latch onto).
    mean_colour = x.float().mean(dim=(2, 3))
    assert mean_colour.std(dim=0).min() > 20
    assert int(x.min()) == 0 or int(x.max()) > 200


def test_datamodule_reads_digits_cluttered():
    from avssl.config import build_config
    from avssl.data.datamodule import make_dataset

    cfg = build_config({"method": {"name": "simclr", "modality": "image"},
                        "model": {"video": None, "image": {"name": "resnet18"}},
                        "data": {"kind": "image", "train": "digits_cluttered", "image_size": 16}})
    ds = make_dataset(cfg, "val", train=False, needs_audio=False)
    item = ds[0]
    assert item["image"].shape[-3:] == (3, 16, 16) and len(ds) == 450
