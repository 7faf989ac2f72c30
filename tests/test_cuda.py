"""The GPU code paths (marked ``cuda``: collected everywhere, skipped without a CUDA GPU; ``make gpu-check`` runs them).

bf16-mixed steps of every method, channels-last and torch.compile against eager fp32, SyncBatchNorm under NCCL,
the memory banks, the CMA search, k-means, kNN and the linear probe on the GPU against the CPU, bf16 extraction
against fp32, NCCL gathers on two GPUs, and a short bf16 training run. fp32 references are computed with TF32
off, so "fp32" means fp32.
"""
from __future__ import annotations

import contextlib
import copy
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from tiny import SHAPES, tiny_batch, tiny_config

from avssl.methods import available_methods, build_method
from avssl.methods.audiovisual import AudioVisualMethod

pytestmark = pytest.mark.cuda
HERE = os.path.dirname(__file__)
GPU = torch.device("cuda", 0)
#: Methods whose loss picks among candidates by computed scores (hard negatives): bf16 may pick others.
VALUE_DEPENDENT_CHOICES = {"tracking_triplet"}


@contextlib.contextmanager
def _true_fp32():
    """TF32 off for matmuls and convolutions (on by default for cuDNN convolutions)."""
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def _to(batch, device):
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


@pytest.mark.parametrize("name", available_methods())
def test_a_bf16_mixed_step_of_every_method_is_finite_moves_the_encoder_and_stays_near_fp32(name):
    from avssl.data.batch import first_view

    cfg = tiny_config(name, **({"num_data": 4} if name == "avid_cma" else {}))
    torch.manual_seed(0)
    fp32 = build_method(name, cfg).train().to(GPU)
    if name == "audio_clusters":
        fp32.pseudo_labels = torch.tensor([0, 1, 2, 0], device=GPU)
    bf16 = copy.deepcopy(fp32)  # the same weights and state (banks, queues): each gets one step
    batch = _to(tiny_batch(fp32), GPU)
    modality = "video" if isinstance(bf16, AudioVisualMethod) else bf16.cfg.method.modality
    encoder = bf16.encoder_for(modality)
    x = first_view(batch[modality], modality)
    with _true_fp32():
        torch.manual_seed(1)  # the methods that draw (negatives, permutations) draw the same in both runs
        want = float(fp32.compute_loss(batch)["loss"].detach())
    # The encoder itself under autocast: near its fp32 output (eval mode: batch-4 BatchNorm statistics of 4-channel
    # maps would amplify the rounding, which is not what is checked here).
    encoder.eval()
    with torch.no_grad():
        with _true_fp32():
            feats32 = encoder(x)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            feats16 = encoder(x).float()
    encoder.train()
    assert float(F.cosine_similarity(feats16, feats32, dim=1).min()) > 0.995
    before = [p.detach().clone() for p in encoder.parameters()]
    opt = torch.optim.SGD([p for p in bf16.parameters() if p.requires_grad], lr=0.1)
    torch.manual_seed(1)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss = bf16.compute_loss(batch)["loss"]
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    opt.zero_grad()
    loss.backward()
    grads = [p.grad for p in bf16.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    opt.step()
    assert any(not torch.equal(a, b) for a, b in zip(before, encoder.parameters()))
    if name not in VALUE_DEPENDENT_CHOICES:
        # Tiny encoders, batch-4 BatchNorm and τ ≈ 0.1 amplify bf16's rounding in the loss: a sanity bound only
        # (bf16 on these tiny models moves losses by up to ~20 %; a broken autocast path moves them by far more).
        assert abs(float(loss) - want) <= 0.25 * abs(want) + 0.1, (float(loss), want)


@pytest.mark.parametrize("encoder, kwargs, shape", [
    ("r3d_tiny", {"base_channels": 8}, (2, *SHAPES["video"])),
    ("r2plus1d_tiny", {}, (2, 3, 8, 32, 32)),
    ("audio_conv_tiny", {"base_channels": 8}, (2, *SHAPES["audio"])),
    ("resnet18", {"base_channels": 8}, (2, 3, 32, 32)),
])
def test_channels_last_and_compile_give_the_eager_fp32_outputs(encoder, kwargs, shape):
    from avssl.engine.speed import channels_last, to_channels_last
    from avssl.models import build_encoder

    torch.manual_seed(0)
    eager = build_encoder(encoder, **kwargs).eval().to(GPU)
    x = torch.randn(*shape, device=GPU)
    cl = to_channels_last(copy.deepcopy(eager))
    compiled = copy.deepcopy(eager)
    compiled.compile()
    with _true_fp32(), torch.no_grad():
        want = eager(x)
        torch.testing.assert_close(cl(channels_last(x)), want, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(compiled(x), want, rtol=1e-3, atol=1e-4)  # fused kernels round differently


def test_sync_batchnorm_under_one_process_nccl_equals_batchnorm(tmp_path):
    import torch.distributed as dist

    if dist.is_initialized():
        pytest.skip("a process group already exists in this process")
    net = torch.nn.Sequential(torch.nn.Conv3d(3, 8, 3, padding=1), torch.nn.BatchNorm3d(8), torch.nn.ReLU()).to(GPU)
    synced = torch.nn.SyncBatchNorm.convert_sync_batchnorm(copy.deepcopy(net))
    assert isinstance(synced[1], torch.nn.SyncBatchNorm)
    x = torch.randn(4, 3, 4, 8, 8, device=GPU)
    dist.init_process_group("nccl", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        with _true_fp32():
            a, b = net(x), synced(x)
            a.square().sum().backward()
            b.square().sum().backward()
    finally:
        dist.destroy_process_group()
    torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(synced[1].running_mean, net[1].running_mean, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(synced[1].running_var, net[1].running_var, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(synced[0].weight.grad, net[0].weight.grad, rtol=1e-3, atol=1e-4)


def test_memory_bank_updates_and_negative_draws_on_the_gpu_equal_the_cpu():
    from avssl.memory import MemoryBank

    banks = {d: MemoryBank(50, 16, momentum=0.5, seed=3, device=d) for d in ("cpu", GPU)}
    idx = torch.tensor([1, 7, 7, 49, 0, 1])  # duplicates are averaged
    feats = torch.randn(6, 16, generator=torch.Generator().manual_seed(0))
    for d, bank in banks.items():
        bank.update(idx.to(d), feats.to(d))
    torch.testing.assert_close(banks[GPU].weight.cpu(), banks["cpu"].weight, rtol=1e-5, atol=1e-6)
    draws = {d: bank.sample_negatives(idx.to(d), 20, generator=torch.Generator().manual_seed(5),
                                      exclude=torch.tensor([[2, 3]] * 6).to(d)) for d, bank in banks.items()}
    assert torch.equal(draws[GPU].cpu(), draws["cpu"])


@pytest.mark.parametrize("loss_name", ["avid", "cma"])
def test_bank_losses_on_the_gpu_equal_the_cpu(loss_name):
    from avssl.losses import build_loss

    g = torch.Generator().manual_seed(0)
    v, a, idx = torch.randn(8, 16, generator=g), torch.randn(8, 16, generator=g), torch.arange(8) * 3
    out = {}
    for d in ("cpu", GPU):
        loss = build_loss(loss_name, num_data=40, dim=16, num_negatives=12, seed=1,
                          **({"k": 4, "num_positive_negatives": 6} if loss_name == "cma" else {})).to(d)
        if loss_name == "cma":
            loss.update_positives(chunk_size=16)
        with _true_fp32():
            value = loss(v.to(d), a.to(d), idx.to(d), generator=torch.Generator().manual_seed(2))
        out[str(d)] = (float(value), loss.video_bank.weight.cpu(), loss.audio_bank.weight.cpu())
    cpu, gpu = out["cpu"], out[str(GPU)]
    assert gpu[0] == pytest.approx(cpu[0], rel=1e-5)
    for i in (1, 2):
        torch.testing.assert_close(gpu[i], cpu[i], rtol=1e-5, atol=1e-6)


def test_cma_positive_search_on_the_gpu_equals_the_cpu():
    from avssl.memory import cma_positives

    g = torch.Generator().manual_seed(0)
    v, a = F.normalize(torch.randn(3000, 32, generator=g), dim=1), F.normalize(torch.randn(3000, 32, generator=g), dim=1)
    cpu = cma_positives(v, a, k=8, chunk_size=512)
    with _true_fp32():
        gpu = cma_positives(v.to(GPU), a.to(GPU), k=8, chunk_size=512).cpu()
    same = (gpu == cpu).all(1)
    assert float(same.float().mean()) >= 0.99
    # Where they differ, only near-equal neighbours changed places: the agreement scores chosen are the same.
    score = torch.minimum(v.double() @ v.double().T, a.double() @ a.double().T)
    for r in (~same).nonzero().flatten().tolist():
        torch.testing.assert_close(score[r, gpu[r]].sort().values, score[r, cpu[r]].sort().values, rtol=0, atol=1e-6)


def test_kmeans_on_the_gpu_finds_the_clusters_the_cpu_finds():
    from sklearn.metrics import adjusted_rand_score

    from avssl.cluster import kmeans_fit

    g = torch.Generator().manual_seed(0)
    centres = torch.randn(20, 32, generator=g) * 4
    truth = torch.arange(20).repeat_interleave(200)
    x = centres[truth] + torch.randn(4000, 32, generator=g)
    cpu = kmeans_fit(x, 20, restarts=2, seed=0)
    with _true_fp32():
        gpu = kmeans_fit(x, 20, restarts=2, seed=0, device=GPU)
    assert gpu.labels.device.type == "cuda"
    assert adjusted_rand_score(truth, gpu.labels.cpu()) == 1.0 == adjusted_rand_score(truth, cpu.labels)
    assert gpu.inertia == pytest.approx(cpu.inertia, rel=1e-4)


def test_bf16_extraction_is_close_to_fp32():
    from avssl.eval.features import amp_dtype_for, extract_features
    from avssl.models import build_encoder

    torch.manual_seed(0)
    enc = build_encoder("r3d_tiny", base_channels=8)
    g = torch.Generator().manual_seed(1)
    batches = [{"video": torch.randn(4, 2, 3, 4, 32, 32, generator=g), "label": torch.arange(4), "index": torch.arange(4) + 4 * i}
               for i in range(3)]
    with _true_fp32():
        fp32 = extract_features(enc, batches, device=GPU, views="mean", progress=False)
    bf16 = extract_features(enc, batches, device=GPU, views="mean", amp_dtype=amp_dtype_for("auto", GPU), progress=False)
    assert bf16["features"].dtype == torch.float32 and torch.equal(bf16["index"], fp32["index"])
    cos = F.cosine_similarity(bf16["features"], fp32["features"], dim=1)
    assert float(cos.min()) > 0.995, cos


def test_knn_and_the_linear_probe_on_the_gpu_agree_with_the_cpu():
    from avssl.eval.knn import knn_predict
    from avssl.eval.linear import probe_predict, train_linear_probe

    g = torch.Generator().manual_seed(0)
    means = torch.randn(5, 32, generator=g) * 2
    y = torch.randint(5, (600,), generator=g)
    x = means[y] + torch.randn(600, 32, generator=g)
    with _true_fp32():
        s_gpu = knn_predict(x[:500], y[:500], x[500:], 5, k=10, device=GPU).cpu()
        p_gpu, _ = train_linear_probe(x[:500], y[:500], 5, epochs=5, device=GPU)
    torch.testing.assert_close(s_gpu, knn_predict(x[:500], y[:500], x[500:], 5, k=10), rtol=1e-4, atol=1e-5)
    p_cpu, _ = train_linear_probe(x[:500], y[:500], 5, epochs=5)
    torch.testing.assert_close(p_gpu.linear.weight, p_cpu.linear.weight, rtol=1e-3, atol=1e-4)
    agree = (probe_predict(p_gpu, x[500:]).argmax(1) == probe_predict(p_cpu, x[500:]).argmax(1)).float().mean()
    assert float(agree) >= 0.99


def test_nccl_gathers_on_two_gpus(tmp_path):
    if torch.cuda.device_count() < 2:
        pytest.skip("needs 2 GPUs (NCCL refuses two ranks on one device)")
    env = dict(os.environ, PYTHONPATH=os.path.dirname(HERE))
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           os.path.join(HERE, "nccl_worker.py"), str(tmp_path)], env=env, capture_output=True, text=True,
                          timeout=240)
    assert proc.returncode == 0, proc.stderr[-4000:]
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    want = torch.cat([torch.zeros(2, 3), torch.ones(3, 3)])
    assert torch.equal(r0["varsize"], want) and torch.equal(r1["varsize"], want)
    w = torch.arange(12, dtype=torch.float32).reshape(4, 3)
    assert torch.equal(r0["grad"], 2 * w[:2]) and torch.equal(r1["grad"], 2 * w[2:])  # every rank's loss counts
    assert torch.equal(r0["bank"], r1["bank"])
    assert r0["shares"]["rows"].tolist() == list(range(6)) and r0["shares"]["meta"] == 0


def test_a_bf16_channels_last_run_on_the_gpu_trains_logs_and_monitors(synth_corpus, tmp_path):
    import csv
    import glob

    from tiny import tiny_overrides

    from avssl.checkpoint import load_checkpoint
    from avssl.config import load_config
    from avssl.engine import fit

    cfg = load_config(overrides=tiny_overrides(synth_corpus, tmp_path, method="avid_cma", **{
        "trainer.accelerator": "gpu", "trainer.precision": "bf16-mixed", "trainer.channels_last": True,
        "trainer.log_every_n_steps": 2, "method.num_negatives": 8,
        "trainer.knn_monitor.every_n_epochs": 1, "trainer.knn_monitor.max_videos": 8}))
    last = fit(cfg, resume=False)
    state = load_checkpoint(last)
    assert state["global_step"] == 6  # one epoch: 24 videos, 4 per step
    assert all(torch.isfinite(v).all() for v in state["state_dict"].values() if v.is_floating_point())
    rows = list(csv.DictReader(open(glob.glob(str(tmp_path / "logs" / "version_*" / "metrics.csv"))[0])))
    assert [r for r in rows if r.get("perf/clips_per_s")] and all(
        0 <= float(r["perf/data_wait"]) <= 1 for r in rows if r.get("perf/data_wait"))
    assert any(r.get("train/loss_step") for r in rows)
    knn = [float(r["val/knn_top1"]) for r in rows if r.get("val/knn_top1")]
    assert len(knn) == 1 and 0 <= knn[0] <= 1
