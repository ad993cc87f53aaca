"""Training speed switches (issue 21 item 6): the rule of each (precision, channels_last,
workers, chip cache) per machine, that each trains, that bf16 is ignored with a logged reason
on a CPU without native bf16, and that the switches that only move work (workers, cache)
change nothing in the samples or the weights."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
import torch

from geounet.errors import DeviceError, InputError
from geounet.model import read_checkpoint
from geounet.synth import synthesize_scene
from geounet.training import TrainConfig, train
from geounet.training.chips import make_chips
from geounet.training.loading import EpochSampler
from geounet.training.speed import (
    cache_rule,
    channels_last_rule,
    native_bf16,
    plan_speed,
    precision_rule,
    workers_rule,
)

TINY = dict(depth=2, base_channels=4, batch_size=4, lr=3e-3, patience=None, epochs=2,
            max_minutes=None, select_from=0.0)
AVX2 = frozenset({"sse4_2", "avx", "avx2", "fma"})
AVX512 = AVX2 | {"avx512f", "avx512bw", "avx512vl"}
AVX512_BF16 = AVX512 | {"avx512_bf16"}
AMX = AVX512 | {"amx_tile", "amx_bf16"}


@pytest.fixture(scope="module")
def chips(tmp_path_factory):
    """A building-only chips folder: 16 chips of 64 px (border weights on by default)."""
    root = tmp_path_factory.mktemp("speed")
    scene = synthesize_scene(root / "scene", size=256, seed=3)
    make_chips(scene.scene_path, scene.truth_path, root / "chips", chip_size=64,
               class_layers={"buildings": "buildings"}, split_block=2)
    return root / "chips"


def test_bf16_rule_is_the_inference_rule_per_flag_set():
    """bf16 autocast exactly where inference's --precision auto picks bf16 (native bf16)."""
    for flags, native in ((AVX2, False), (AVX512, False), (AVX512_BF16, True), (AMX, True),
                          (frozenset(), False)):
        assert native_bf16(flags) is native
        plan = plan_speed(TrainConfig(), "cpu", 0, flags=flags, cores=2, threads=2,
                          available=2**33)
        assert plan.precision.value == ("bf16" if native else "fp32")
        for precision in ("bf16", "auto"):
            assert precision_rule(precision, "cpu", native_bf16=native).value == (
                "bf16" if native else "fp32")
        assert precision_rule("fp32", "cpu", native_bf16=native).value == "fp32"
    reason = precision_rule("bf16", "cpu", native_bf16=False).reason
    assert "no native bf16" in reason and "fp32" in reason
    with pytest.raises(DeviceError, match="needs a CUDA device"):
        precision_rule("fp16", "cpu", native_bf16=True)
    assert precision_rule("auto", "cuda", native_bf16=False, cuda_bf16=True).value == "bf16"
    assert precision_rule("auto", "cuda", native_bf16=False).value == "fp16"


def test_channels_last_workers_and_cache_rules():
    assert channels_last_rule(None, "cpu", amp=False).value is True
    assert channels_last_rule(None, "cuda", amp=True).value is True
    assert channels_last_rule(None, "cuda", amp=False).value is False
    assert channels_last_rule(False, "cpu", amp=True).value is False
    # workers: a free core or none
    assert workers_rule(None, "cpu", cores=2, threads=2).value == 0
    assert workers_rule(None, "cpu", cores=16, threads=16).value == 0
    assert workers_rule(None, "cpu", cores=4, threads=2).value == 1
    assert workers_rule(None, "cuda", cores=2, threads=2).value == 4
    assert workers_rule(3, "cpu", cores=2, threads=2).value == 3
    # cache: at most 2 GiB and a quarter of the free memory
    assert cache_rule(None, 100 * 2**20, 8 * 2**30).value is True
    assert cache_rule(None, 100 * 2**20, 300 * 2**20).value is False  # > a quarter
    assert cache_rule(None, 3 * 2**30, 64 * 2**30).value is False  # > 2 GiB
    assert cache_rule(None, 100 * 2**20, None).value is True
    assert cache_rule(False, 1, 2**40).value is False and cache_rule(True, 2**40, 1).value
    plan = plan_speed(TrainConfig(), "cpu", 2**20, flags=AVX2, cores=2, threads=2,
                      available=2**33)
    assert plan.describe().startswith("precision fp32 (fp32: the CPU has no native bf16")
    assert "channels_last on" in plan.describe() and "chip cache on" in plan.describe()
    for name in ("channels_last", "cache_chips"):
        with pytest.raises(InputError, match=name):
            TrainConfig(**{name: "yes"})


def test_epoch_sampler_keeps_the_order_of_a_dataloader_made_per_epoch():
    for seed, epoch, size in ((0, 1, 10), (5, 3, 37), (2, 30, 1)):
        generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
        loader = torch.utils.data.DataLoader(list(range(size)), batch_size=size, shuffle=True,
                                             generator=generator)
        sampler = EpochSampler(size, True, seed)
        sampler.set_epoch(epoch)
        assert list(sampler) == [(epoch, i) for i in next(iter(loader)).tolist()]
    plain = EpochSampler(4, False, 0)
    plain.set_epoch(7)
    assert list(plain) == [(7, 0), (7, 1), (7, 2), (7, 3)] and len(plain) == 4


def _speed_line(caplog) -> str:
    return next(r.getMessage() for r in caplog.records if "training speed" in r.getMessage())


@pytest.mark.parametrize("switches", [
    dict(precision="fp32", channels_last=False, cache_chips=False, workers=0),
    dict(precision="fp32", channels_last=True),
    dict(precision="fp32", cache_chips=True, workers=1),
    dict(precision="bf16"),
], ids=["plain", "channels_last", "cache+worker", "bf16"])
def test_each_switch_trains(chips, tmp_path, caplog, monkeypatch, switches):
    """Each switch trains (finite, falling loss) and the log line names it; bf16 (faked as
    native where the CPU has none) keeps the fp32 loss curve within 5% and has no NaN."""
    monkeypatch.setattr("geounet.environment.cpu_flags", lambda: frozenset({"avx2", "avx512_bf16"}))
    caplog.set_level(logging.INFO, logger="geounet.training")
    result = train(chips, tmp_path / "m.pt",
                   config=TrainConfig(**{**TINY, "epochs": 3}, **switches))
    line = _speed_line(caplog)
    assert f"precision {switches['precision']}" in line
    if "channels_last" in switches:
        assert f"channels_last {'on' if switches['channels_last'] else 'off'}" in line
    if "workers" in switches:
        assert f"{switches['workers']} DataLoader worker(s)" in line
    if "cache_chips" in switches:
        assert f"chip cache {'on' if switches['cache_chips'] else 'off'}" in line
    losses = [h.train_loss for h in result.history]
    assert all(math.isfinite(v) for v in losses + [h.val_loss for h in result.history])
    assert losses[-1] < losses[0]
    if switches["precision"] == "bf16":
        reference = train(chips, tmp_path / "fp32.pt", config=TrainConfig(
            **{**TINY, "epochs": 3}, precision="fp32"))
        for ours, theirs in zip(result.history, reference.history):
            assert ours.train_loss == pytest.approx(theirs.train_loss, rel=0.05)
            assert ours.val_loss == pytest.approx(theirs.val_loss, rel=0.05)


def test_bf16_is_ignored_with_a_logged_reason_without_native_bf16(chips, tmp_path, caplog,
                                                                   monkeypatch):
    """On a CPU without native bf16 (faked): an explicit bf16 trains fp32 with a warning
    naming why; auto trains fp32 and the log says why."""
    monkeypatch.setattr("geounet.environment.cpu_flags", lambda: frozenset({"avx2"}))
    caplog.set_level(logging.INFO, logger="geounet.training")
    train(chips, tmp_path / "a.pt", config=TrainConfig(**{**TINY, "epochs": 1},
                                                      precision="bf16"))
    warned = [r for r in caplog.records if r.levelno == logging.WARNING
              and "bf16 asked for" in r.getMessage()]
    assert len(warned) == 1 and "no native bf16" in warned[0].getMessage()
    assert "precision fp32 (bf16 asked for" in _speed_line(caplog)
    caplog.clear()
    train(chips, tmp_path / "b.pt", config=TrainConfig(**{**TINY, "epochs": 1}))
    assert "precision fp32 (fp32: the CPU has no native bf16" in _speed_line(caplog)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING
                and "bf16" in r.getMessage()]


def test_workers_and_cache_change_nothing(chips, tmp_path):
    """A persistent worker (augmenting for the right epoch without being told) and the chip
    cache move work, not results: the same weights bit for bit."""
    config = dict(TINY, precision="fp32")
    runs = {}
    for name, switches in (("plain", dict(workers=0, cache_chips=False)),
                           ("moved", dict(workers=1, cache_chips=True))):
        result = train(chips, tmp_path / f"{name}.pt", config=TrainConfig(**config, **switches))
        runs[name] = (read_checkpoint(result.last_path)["state_dict"],
                      [h.train_loss for h in result.history])
    (a, loss_a), (b, loss_b) = runs["plain"], runs["moved"]
    assert loss_a == loss_b
    assert all(torch.equal(v, b[k]) for k, v in a.items())


def test_cached_samples_equal_read_samples(chips):
    from geounet.training.dataset import ChipDataset, SampleSpec
    from geounet.training.layout import open_dataset

    records = list(open_dataset(chips).records)
    spec = SampleSpec(48, 40, 4)
    common = dict(mean=(100,) * 3, std=(50,) * 3, num_classes=2, border_weight=10.0,
                  scale=0.25, gamma=0.25, hue=0.05, seed=3)
    for train_mode in (True, False):
        read = ChipDataset(records, spec, train=train_mode, **common)
        kept = ChipDataset(records, spec, train=train_mode, cache=True, **common)
        for key in ((1, 0), (2, 0), (1, 5), (2, 5)):
            for x, y in zip(read[key], kept[key]):
                assert torch.equal(x, y)
        assert len(kept.reader.chips) == 2 and not read.reader.chips
        # border weights need the building instances: the label plane is the packed
        # class + instance id (int32), not the uint8 mask
        assert kept.instances
        assert kept.reader.decoded_bytes() == len(records) * 64 * 64 * (3 + 4)
    assert np.isfinite(kept[(1, 0)][0].numpy()).all()
