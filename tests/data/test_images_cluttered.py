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


def test_image_copies_multiply_training_renderings_only():
    from avssl.config import build_config
    from avssl.data.datamodule import make_dataset

    cfg = build_config({"method": {"name": "simclr", "modality": "image"},
                        "model": {"video": None, "image": {"name": "resnet18"}},
                        "data": {"kind": "image", "train": "digits_colour", "image_size": 16, "image_copies": 3}})
    train = make_dataset(cfg, "train", train=False, needs_audio=False)
    val = make_dataset(cfg, "val", train=False, needs_audio=False)
    assert len(train) == 3 * 1347 and len(val) == 450
    assert list(train.labels[:1347]) == list(train.labels[1347:2694])  # each copy is the same digits, re-rendered


def test_grouped_views_come_from_the_item_and_its_group():
    from avssl.data.image_transforms import ViewsAugment
    from avssl.data.images import TensorImageDataset

    images = torch.arange(6, dtype=torch.uint8).view(6, 1, 1, 1).expand(6, 3, 2, 2).contiguous()
    groups = [0, 1, 2, 0, 1, 2]  # image i and i + 3 are two renderings of one source
    ds = TensorImageDataset(images, groups=groups, transform=ViewsAugment([lambda x: x] * 3))
    seen = set()
    for epoch in range(8):
        ds.set_epoch(epoch)
        for i in range(6):
            views = ds[i]["image"]  # V×3×2×2, each view one whole image
            picked = [round(float(v[0, 0, 0]) * 255) for v in views]
            assert picked[0] == i and all(p % 3 == i % 3 for p in picked)
            seen.update(p for p in picked[1:] if p != i)
    assert seen == set(range(6))  # the other rendering does get drawn
    ds.set_epoch(0)
    assert torch.equal(ds[4]["image"], ds[4]["image"])  # reproducible per (seed, epoch, index)
    # Without groups every view is of the item itself.
    plain = TensorImageDataset(images, transform=ViewsAugment([lambda x: x] * 3))
    assert all(round(float(v[0, 0, 0]) * 255) == 4 for v in plain[4]["image"])


def test_positives_across_copies_in_the_datamodule():
    from avssl.config import build_config
    from avssl.data.datamodule import make_dataset

    cfg = build_config({"method": {"name": "simclr", "modality": "image"},
                        "model": {"video": None, "image": {"name": "resnet18"}},
                        "data": {"kind": "image", "train": "digits_colour", "image_size": 16, "image_copies": 2,
                                 "positives_across_copies": True}})
    train = make_dataset(cfg, "train", train=True, needs_audio=False)
    assert train.members is not None and len(train.members) == 1347
    assert all(len(m) == 2 and int(m[1]) - int(m[0]) == 1347 for m in train.members[:5])
    assert make_dataset(cfg, "val", train=False, needs_audio=False).members is None


def test_image_copies_on_another_set_is_refused():
    import pytest

    from avssl.config import build_config
    from avssl.data.datamodule import make_dataset

    cfg = build_config({"method": {"name": "simclr", "modality": "image"},
                        "model": {"video": None, "image": {"name": "resnet18"}},
                        "data": {"kind": "image", "train": "digits", "image_size": 16, "image_copies": 3}})
    with pytest.raises(ValueError, match="image_copies.*digits_colour"):
        make_dataset(cfg, "train", train=True, needs_audio=False)


def test_groups_of_the_wrong_length_are_refused():
    import pytest

    from avssl.data.images import TensorImageDataset

    with pytest.raises(ValueError, match="TensorImageDataset: groups must be a sequence of 4 ints"):
        TensorImageDataset(torch.zeros(4, 3, 2, 2, dtype=torch.uint8), groups=[0, 1, 0])
