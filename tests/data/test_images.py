"""Image augmentations and image datasets: shapes, reproducibility, view probabilities, crop areas,
the bundled digits, image folders (with broken files) and frames of a prepared video corpus."""
from __future__ import annotations

import logging
import math
import os
import shutil
from collections import Counter

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from avssl.data import TooManyDecodeErrors
from avssl.data.batch import split_views
from avssl.data.image_transforms import (
    EvalImageTransform,
    MultiCropAugment,
    SimCLRAugment,
    TwoViewAugment,
    ViewsAugment,
    available_image_augments,
    build_image_augment,
    byol_augment,
    gaussian_blur,
    simclr_augment,
    solarize,
    to_float_image,
)
from avssl.data.images import (
    DigitsDataset,
    ImageFolderDataset,
    TensorImageDataset,
    VideoFramesDataset,
    collate_views,
    digits,
)

IDENTITY = dict(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
PLAIN = dict(jitter_prob=0.0, grayscale_prob=0.0, blur_prob=0.0, **IDENTITY)  # geometry only


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def rand_image(h: int = 24, w: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=gen(seed))


def coordinate_image(h: int, w: int) -> torch.Tensor:
    """float 3×H×W: channel 0 = column / (W − 1), channel 1 = row / (H − 1), channel 2 = 0."""
    cols = torch.linspace(0, 1, w).view(1, w).expand(h, w)
    rows = torch.linspace(0, 1, h).view(h, 1).expand(h, w)
    return torch.stack([cols, rows, torch.zeros(h, w)])


# -- conversion and single operations ----------------------------------------------------------
def test_to_float_image_accepts_the_usual_layouts_and_repeats_gray():
    chw = rand_image(5, 7)
    expected = chw.float() / 255
    assert torch.equal(to_float_image(chw), expected)
    assert torch.equal(to_float_image(chw.permute(1, 2, 0)), expected)  # H×W×C
    assert torch.equal(to_float_image(chw.permute(1, 2, 0).numpy()), expected)
    assert torch.equal(to_float_image(expected), expected)  # float stays as it is
    gray = chw[:1]
    for g in (gray, gray[0], gray.permute(1, 2, 0)):  # 1×H×W, H×W, H×W×1
        out = to_float_image(g)
        assert out.shape == (3, 5, 7) and out.dtype == torch.float32
        assert torch.equal(out[0], out[1]) and torch.equal(out[0], out[2])
    with pytest.raises(ValueError, match="1 or 3 channels"):
        to_float_image(torch.zeros(5, 7, 4))
    with pytest.raises(TypeError, match="dtype"):
        to_float_image(torch.zeros(3, 5, 7, dtype=torch.int32))


def test_gaussian_blur_matches_torchvision_and_keeps_constants():
    from torchvision.transforms.v2 import functional as TF

    x = torch.rand(3, 20, 17, generator=gen(1))
    ours = gaussian_blur(x, 5, 1.3)
    ref = TF.gaussian_blur(x, kernel_size=[5, 5], sigma=[1.3, 1.3])
    assert torch.allclose(ours, ref, atol=1e-5)
    const = torch.full((3, 6, 6), 0.7)
    assert torch.allclose(gaussian_blur(const, 3, 2.0), const)
    # An impulse spreads into the normalised outer product of the 1-D Gaussian.
    impulse = torch.zeros(1, 9, 9)
    impulse[0, 4, 4] = 1.0
    k = torch.tensor([math.exp(-0.5 * (t / 0.8) ** 2) for t in range(-1, 2)])
    k = k / k.sum()
    assert torch.allclose(gaussian_blur(impulse, 3, 0.8)[0, 3:6, 3:6], torch.outer(k, k), atol=1e-6)


def test_solarize_inverts_at_and_above_the_threshold():
    x = torch.tensor([0.0, 0.49, 0.5, 0.8, 1.0])
    assert torch.allclose(solarize(x), torch.tensor([0.0, 0.49, 0.5, 0.2, 0.0]))


# -- SimCLR-style views ------------------------------------------------------------------------
def test_simclr_augment_shapes_dtypes_and_reproducibility():
    aug = simclr_augment(16)
    x = rand_image(24, 40)
    a = aug(x, generator=gen(3))
    assert a.shape == (3, 16, 16) and a.dtype == torch.float32 and torch.isfinite(a).all()
    assert torch.equal(a, aug(x, generator=gen(3)))
    assert not torch.allclose(a, aug(x, generator=gen(4)))
    # uint8 and the same image as float in [0, 1] give the same view.
    assert torch.allclose(a, aug(x.float() / 255, generator=gen(3)), atol=1e-5)
    # Grayscale input (a digit) comes out as 3 equal channels when nothing colours it.
    digit = torch.randint(0, 256, (1, 20, 20), dtype=torch.uint8, generator=gen(0))
    v = SimCLRAugment(16, **PLAIN)(digit, generator=gen(0))
    assert v.shape == (3, 16, 16) and torch.equal(v[0], v[1]) and torch.equal(v[0], v[2])


def test_two_views_are_distinct_draws_and_reproducible():
    x = rand_image()
    two = TwoViewAugment(SimCLRAugment(16))
    v = two(x, generator=gen(0))
    assert isinstance(v, list) and len(v) == 2 and all(t.shape == (3, 16, 16) for t in v)
    assert not torch.allclose(v[0], v[1])
    again = two(x, generator=gen(0))
    assert all(torch.equal(a, b) for a, b in zip(v, again))
    three = ViewsAugment([SimCLRAugment(16), SimCLRAugment(8), EvalImageTransform(12)])(x, generator=gen(0))
    assert [tuple(t.shape) for t in three] == [(3, 16, 16), (3, 8, 8), (3, 12, 12)]


def test_byol_views_differ_in_blur_and_solarize_probability():
    v1, v2 = byol_augment(16)
    assert (v1.blur_prob, v1.solarize_prob, v2.blur_prob, v2.solarize_prob) == (1.0, 0.0, 0.1, 0.2)
    # A white image stays in [0.6, 1] under every other op (brightness >= 0.6; contrast, saturation, hue
    # and blur leave a constant gray alone), and solarising maps that to [0, 0.4]: its mean tells.
    white = torch.full((3, 24, 24), 255, dtype=torch.uint8)
    mean = torch.tensor(v1.mean).view(3, 1, 1)
    std = torch.tensor(v1.std).view(3, 1, 1)
    n = 200
    g = gen(0)
    solarized = {1: 0, 2: 0}
    for _ in range(n):
        for k, aug in ((1, v1), (2, v2)):
            pixels = aug(white, generator=g) * std + mean
            solarized[k] += int(pixels.mean() < 0.5)
    assert solarized[1] == 0
    assert abs(solarized[2] / n - 0.2) < 0.07
    g = gen(1)
    blurred = {k: sum(aug.sample(24, 24, g).blur_sigma is not None for _ in range(n)) for k, aug in ((1, v1), (2, v2))}
    assert blurred[1] == n and abs(blurred[2] / n - 0.1) < 0.05


def test_random_resized_crop_area_stays_in_the_scale_range():
    h = w = 96
    size, lo, hi = 16, 0.2, 0.6
    aug = SimCLRAugment(size, min_scale=lo, max_scale=hi, flip=False, **PLAIN)
    img = coordinate_image(h, w)
    fractions = []
    g = gen(0)
    for _ in range(100):
        v = aug(img, generator=g)
        # Output pixel centres span (s − 1)/s of the window: undo that to measure the window.
        width = (v[0].max() - v[0].min()) * (w - 1) * size / (size - 1)
        height = (v[1].max() - v[1].min()) * (h - 1) * size / (size - 1)
        fractions.append(float(width * height) / (h * w))
        assert bool((v[0, :, 1:] > v[0, :, :-1]).all())  # no flip: columns increase
    assert lo - 0.04 <= min(fractions) and max(fractions) <= hi + 0.04
    assert min(fractions) < lo + 0.1 and max(fractions) > hi - 0.1  # the range is used
    g = gen(1)
    for _ in range(50):  # the drawn windows themselves
        top, left, ch, cw = aug.sample(h, w, g).crop
        assert lo - 0.02 <= ch * cw / (h * w) <= hi + 0.02
        assert 3 / 4 - 0.05 <= cw / ch <= 4 / 3 + 0.05
        assert 0 <= top <= h - ch and 0 <= left <= w - cw
    flipper = SimCLRAugment(size, flip=True, **PLAIN)
    g = gen(2)
    flipped = 0
    for _ in range(100):
        v = flipper(img, generator=g)
        flipped += int(v[0, 0, 0] > v[0, 0, -1])
    assert 35 <= flipped <= 65


def test_multicrop_returns_globals_first_then_locals():
    mc = MultiCropAugment(32, 12, num_global=2, num_local=4)
    views = mc(rand_image(40, 48), generator=gen(0))
    assert [tuple(v.shape) for v in views] == [(3, 32, 32)] * 2 + [(3, 12, 12)] * 4
    assert mc.sizes == [32, 32, 12, 12, 12, 12]
    assert (mc.global_aug.min_scale, mc.global_aug.max_scale) == (0.14, 1.0)
    assert (mc.local_aug.min_scale, mc.local_aug.max_scale) == (0.05, 0.14)
    assert not torch.allclose(views[0], views[1])
    again = mc(rand_image(40, 48), generator=gen(0))
    assert all(torch.equal(a, b) for a, b in zip(views, again))


def test_eval_transform_is_a_centred_deterministic_crop():
    t = EvalImageTransform(16, **IDENTITY)
    img = coordinate_image(40, 64)
    v = t(img)
    assert v.shape == (3, 16, 16) and torch.equal(v, t(img, generator=gen(5)))
    assert abs(float(v[0].mean()) - 0.5) < 0.01 and abs(float(v[1].mean()) - 0.5) < 0.01
    # short side 40 -> round(16 / 0.875) = 18: the crop covers 16/18 of the height
    assert float(v[1].max() - v[1].min()) == pytest.approx(16 / 18 * 15 / 16, abs=0.03)
    whole = EvalImageTransform(16, crop_fraction=1.0, **IDENTITY)(coordinate_image(16, 16))
    assert torch.allclose(whole, coordinate_image(16, 16), atol=1e-6)


def test_recipes_by_method_name():
    views = {name: build_image_augment(name, 16) for name in available_image_augments()}
    assert set(views) == {"simclr", "moco", "simsiam", "byol", "barlow_twins", "vicreg", "swav"}
    for name, aug in views.items():
        assert aug.num_views == (8 if name == "swav" else 2)
    assert views["moco"].augments[0].min_scale == 0.2
    assert views["byol"].augments[1].solarize_prob == 0.2 and views["byol"].augments[0].jitter[2] == 0.2
    assert views["swav"].sizes == [16, 16] + [7] * 6
    with pytest.raises(KeyError, match="simclr"):
        build_image_augment("dino", 16)


# -- in-memory datasets and batches ------------------------------------------------------------
def test_tensor_dataset_items_seeding_and_batch_formats():
    images = torch.randint(0, 256, (6, 20, 20), dtype=torch.uint8, generator=gen(0))  # N×H×W gray
    plain = TensorImageDataset(images, [0, 1, 2, 0, 1, 2])
    item = plain[4]
    assert set(item) == {"image", "label", "index"} and (item["label"], item["index"]) == (1, 4)
    assert item["image"].shape == (3, 20, 20) and torch.equal(item["image"][0], images[4].float() / 255)
    assert TensorImageDataset(images)[0]["label"] == -1
    with pytest.raises(ValueError, match="6 ints"):
        TensorImageDataset(images, [0, 1])

    two = TensorImageDataset(images, list(range(6)), transform=TwoViewAugment(SimCLRAugment(16)), seed=1)
    a = two[2]["image"]
    assert a.shape == (2, 3, 16, 16)
    fresh = TensorImageDataset(images, list(range(6)), transform=TwoViewAugment(SimCLRAugment(16)), seed=1)
    assert torch.equal(a, fresh[2]["image"])  # (seed, epoch, index) fixes the item
    fresh.set_epoch(1)
    assert not torch.allclose(a, fresh[2]["image"])
    other_seed = TensorImageDataset(images, list(range(6)), transform=TwoViewAugment(SimCLRAugment(16)), seed=2)
    assert not torch.allclose(a, other_seed[2]["image"])

    batch = next(iter(DataLoader(two, batch_size=4)))
    assert batch["image"].shape == (4, 2, 3, 16, 16) and batch["label"].tolist() == [0, 1, 2, 3]
    assert torch.equal(batch["image"][2], a)
    assert [tuple(v.shape) for v in split_views(batch["image"], "image")] == [(4, 3, 16, 16)] * 2
    in_workers = next(iter(DataLoader(two, batch_size=4, num_workers=2)))
    assert torch.equal(in_workers["image"], batch["image"])  # same draws whatever the workers

    multi = TensorImageDataset(images, list(range(6)), transform=MultiCropAugment(16, 8, num_local=3))
    mb = next(iter(DataLoader(multi, batch_size=4)))
    assert isinstance(mb["image"], list) and [tuple(v.shape) for v in mb["image"]] == [(4, 3, 16, 16)] * 2 + [(4, 3, 8, 8)] * 3
    assert split_views(mb["image"], "image") == mb["image"]
    cb = collate_views([two[i] for i in range(3)])
    assert [tuple(v.shape) for v in cb["image"]] == [(3, 3, 16, 16)] * 2 and cb["index"].tolist() == [0, 1, 2]
    single = collate_views([plain[i] for i in range(3)])
    assert [tuple(v.shape) for v in single["image"]] == [(3, 3, 20, 20)]


# -- digits ------------------------------------------------------------------------------------
def test_digits_splits_are_stratified_complete_and_deterministic():
    from sklearn.datasets import load_digits

    target = load_digits().target
    images, labels = digits("all", size=32)
    assert images.shape == (1797, 1, 32, 32) and images.dtype == torch.uint8 and labels.dtype == torch.long
    assert int(images.min()) == 0 and int(images.max()) == 255
    assert labels.tolist() == target.tolist() and len(set(labels.tolist())) == 10
    per_class = np.bincount(target)
    tr_x, tr_y = digits("train", size=32)
    te_x, te_y = digits("test", size=32)
    expected_test = [int(round(n * 0.25)) for n in per_class]
    assert np.bincount(te_y.numpy()).tolist() == expected_test
    assert np.bincount(tr_y.numpy()).tolist() == (per_class - np.array(expected_test)).tolist()
    assert len(tr_y) + len(te_y) == 1797
    # The two splits together are exactly the whole set (as a multiset of (image, label)).
    key = lambda x, y: Counter((bytes(a.numpy().tobytes()), int(b)) for a, b in zip(x, y))  # noqa: E731
    assert key(tr_x, tr_y) + key(te_x, te_y) == key(images, labels)
    again_x, again_y = digits("test", size=32)
    assert torch.equal(again_x, te_x) and torch.equal(again_y, te_y)
    other_x, _ = digits("test", size=32, seed=1)
    assert not torch.equal(other_x, te_x)
    with pytest.raises(ValueError, match="split"):
        digits("val")


def test_digits_upscaling_keeps_the_images():
    from sklearn.datasets import load_digits

    raw = load_digits().images  # N×8×8, 0..16
    native, _ = digits("all", size=8)
    assert torch.equal(native[:, 0], torch.from_numpy(np.round(raw * 255 / 16)).to(torch.uint8))
    big, labels = digits("all", size=32)
    back = F.interpolate(big.float(), size=(8, 8), mode="bilinear", antialias=True, align_corners=False)[:, 0]
    for c in range(10):
        m_back = back[labels == c].mean(0).flatten().double()
        m_raw = torch.from_numpy(raw[labels.numpy() == c].mean(0)).flatten()
        assert torch.corrcoef(torch.stack([m_back, m_raw]))[0, 1] > 0.95


def test_digits_dataset_with_views():
    ds = DigitsDataset("test", size=16, transform=TwoViewAugment(*byol_augment(16)))
    assert len(ds) == 450 and ds.classes == [str(d) for d in range(10)]
    item = ds[0]
    assert item["image"].shape == (2, 3, 16, 16) and 0 <= item["label"] <= 9


# -- image folders -----------------------------------------------------------------------------
@pytest.fixture
def image_tree(tmp_path):
    """root/cat/{c0,c1}.png + deep/c2.png (RGB), root/ant/{a0.png (gray), a1.bmp}, plus files to ignore."""
    from PIL import Image
    from torchvision.io import write_png

    root = tmp_path / "images"
    written = {}
    for name in ("cat/c0.png", "cat/c1.png", "cat/deep/c2.png"):
        img = rand_image(9, 11, seed=len(written))
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        write_png(img, str(root / name))
        written[name] = img
    (root / "ant").mkdir()
    gray = torch.randint(0, 256, (1, 6, 5), dtype=torch.uint8, generator=gen(9))
    write_png(gray, str(root / "ant/a0.png"))
    written["ant/a0.png"] = gray.expand(3, -1, -1)
    bmp = rand_image(7, 8, seed=10)
    Image.fromarray(bmp.permute(1, 2, 0).numpy()).save(root / "ant/a1.bmp")
    written["ant/a1.bmp"] = bmp
    (root / "ant/notes.txt").write_text("not an image")
    (root / "cat/.hidden.png").write_bytes(b"")
    return root, written


def test_image_folder_labels_by_sorted_class_names_and_decodes_exactly(image_tree):
    root, written = image_tree
    ds = ImageFolderDataset(root)
    assert ds.classes == ["ant", "cat"] and len(ds) == 5
    rel = [os.path.relpath(p, root) for p, _ in ds.samples]
    assert rel == ["ant/a0.png", "ant/a1.bmp", "cat/c0.png", "cat/c1.png", os.path.join("cat", "deep", "c2.png")]
    assert ds.labels == [0, 0, 1, 1, 1]
    for i, r in enumerate(rel):
        item = ds[i]
        assert item["index"] == i and item["label"] == ds.labels[i]
        assert torch.equal((item["image"] * 255).round().to(torch.uint8), written[r.replace(os.sep, "/")])
    views = ImageFolderDataset(root, transform=TwoViewAugment(SimCLRAugment(8)), seed=3)
    assert views[2]["image"].shape == (2, 3, 8, 8)
    assert torch.equal(views[2]["image"], ImageFolderDataset(root, transform=TwoViewAugment(SimCLRAugment(8)), seed=3)[2]["image"])


def test_image_folder_skips_corrupt_files_then_gives_up(image_tree, caplog):
    root, _ = image_tree
    (root / "cat/broken.png").write_text("this is not a png")
    good = (root / "cat/c0.png").read_bytes()
    (root / "cat/truncated.png").write_bytes(good[: len(good) // 2])
    ds = ImageFolderDataset(root, max_failure_fraction=1.0)
    bad = {i for i, (p, _) in enumerate(ds.samples) if "broken" in p or "truncated" in p}
    assert len(bad) == 2
    with caplog.at_level(logging.WARNING, logger="avssl.data.images"):
        items = [ds[i] for i in range(len(ds))]
    for i, item in enumerate(items):
        assert (item["index"] in bad) is False and (item["index"] == i) == (i not in bad)
    assert ds.num_failures >= 2  # a replacement may land on the other bad file too
    assert any("broken.png" in r.getMessage() for r in caplog.records)
    assert any("truncated.png" in r.getMessage() for r in caplog.records)
    strict = ImageFolderDataset(root, max_failure_fraction=0.0, min_failures_before_stop=1)
    with pytest.raises(TooManyDecodeErrors, match=str(root)):
        strict[min(bad)]


def test_image_folder_errors_name_the_path(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match=str(missing)):
        ImageFolderDataset(missing)
    empty = tmp_path / "empty"
    (empty / "cls").mkdir(parents=True)
    (empty / "cls" / "readme.txt").write_text("no images here")
    with pytest.raises(ValueError, match=str(empty)):
        ImageFolderDataset(empty)


# -- frames of a prepared video corpus ---------------------------------------------------------
@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """2 classes × 2 videos × 1 s at 32², prepared with the Kinetics CSV (one train, one val per class)."""
    from avssl.data.prep import prepare
    from avssl.apps.synthetic import synthesize

    base = tmp_path_factory.mktemp("frames")
    synthesize(str(base / "src"), classes=2, per_class=2, seconds=1.0, size=32, seed=0, val_fraction=0.5,
               workers=1, progress=False)
    prepare(base / "src" / "videos", base / "prep", short_side=32, csv=base / "src" / "annotations.csv",
            workers=1, progress=False)
    return base


def test_video_frames_from_a_manifest(prepared):
    from avssl.data.decoding import read_clip
    from avssl.data.manifest import read_manifest

    manifest = prepared / "prep" / "manifest.csv"
    rows = read_manifest(manifest)
    ds = VideoFramesDataset(manifest, frames_per_video=3, size=24)
    assert len(ds) == 3 * len(rows) == 12 and ds.images.shape == (12, 3, 24, 24) and ds.images.dtype == torch.uint8
    assert ds.video_of.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
    assert ds.labels == [r.label_index for r in ds.rows for _ in range(3)] and sorted(set(ds.labels)) == [0, 1]
    # The frames are read_clip's uniformly spaced frames over the whole video, resized.
    clip = read_clip(ds.rows[1].path, start=0.0, duration=ds.rows[1].duration, num_frames=3, audio=False)
    ref = F.interpolate(clip.video.permute(0, 3, 1, 2).float(), size=(24, 24), mode="bilinear",
                        antialias=True, align_corners=False).round().clamp(0, 255)
    assert (ds.images[3:6].float() - ref).abs().max() <= 1
    assert not torch.equal(ds.images[3], ds.images[5])  # different times of a moving scene
    item = ds[4]
    assert item["image"].shape == (3, 24, 24) and item["label"] == ds.rows[1].label_index

    train = VideoFramesDataset(manifest, split="train", frames_per_video=2, size=16,
                               transform=TwoViewAugment(SimCLRAugment(16)))
    assert len(train) == 4 and all(r.split == "train" for r in train.rows)
    assert train[0]["image"].shape == (2, 3, 16, 16)
    with pytest.raises(ValueError, match="split 'test'"):
        VideoFramesDataset(manifest, split="test")


def test_video_frames_skip_an_unreadable_video(prepared, tmp_path, caplog):
    tree = tmp_path / "tree"
    shutil.copytree(prepared / "src" / "videos", tree)
    (tree / "blink" / "broken.mp4").write_text("not a video")
    with caplog.at_level(logging.WARNING, logger="avssl.data.images"):
        ds = VideoFramesDataset(tree, frames_per_video=2, size=16, max_failure_fraction=0.5)
    assert len(ds.rows) == 4 and len(ds) == 8
    assert any("broken.mp4" in r.getMessage() for r in caplog.records)
    with pytest.raises(TooManyDecodeErrors, match="1 of 5"):
        VideoFramesDataset(tree, frames_per_video=2, size=16, max_failure_fraction=0.0)
