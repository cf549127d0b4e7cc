import math

import numpy as np
import pytest
import torch

from birdpipe.common.params import AugmentParams
from birdpipe.features.spectral import FeatureConfig, FeatureExtractor
from birdpipe.training.augment import Augmenter, NoiseBank, mix_at_snr
from tests.conftest import chirp


def augmenter(kind="logmel", mean=(-30.0,), n_classes=5, bank=None, **params):
    return Augmenter(AugmentParams.model_validate(params), kind, 128, list(mean), n_classes, bank)


def test_specaugment_masks_with_the_channel_mean_and_respects_widths():
    torch.manual_seed(0)
    x = torch.randn(64, 1, 40, 100)
    out = augmenter(specaugment={"p": 1.0, "freq_mask": 8, "time_mask": 20})(x, torch.zeros(64, dtype=torch.long))[0]
    masked = out != x
    assert masked.any()
    assert torch.all(out[masked] == -30.0)
    for i in range(64):
        rows = masked[i, 0].all(dim=1).sum().item()  # whole frequency rows masked
        columns = masked[i, 0].all(dim=0).sum().item()
        assert rows <= 8 and columns <= 20


def test_specaugment_probability_zero_and_one():
    torch.manual_seed(1)
    x = torch.randn(200, 3, 20, 50)
    off = augmenter(kind="mfcc", mean=(0, 0, 0), specaugment={"p": 0.0})
    assert torch.equal(off(x, torch.zeros(200, dtype=torch.long))[0], x)
    half = augmenter(kind="mfcc", mean=(0, 0, 0), specaugment={"p": 0.5, "freq_mask": 5, "time_mask": 10})
    changed = (half(x, torch.zeros(200, dtype=torch.long))[0] != x).flatten(1).any(dim=1).float().mean()
    assert 0.35 < changed < 0.65


def test_mixup_gives_convex_mixtures_with_the_lambda_of_their_soft_targets():
    torch.manual_seed(2)
    n = 32
    x = torch.randn(n, 1, 8, 8)
    labels = torch.arange(n)  # one class per example: each target row names the two rows that were mixed
    out, target = augmenter(mixup={"p": 1.0, "alpha": 0.4}, n_classes=n)(x, labels)
    assert out.shape == x.shape and target.shape == (n, n)
    assert torch.all(target >= 0)
    np.testing.assert_allclose(target.sum(dim=1).numpy(), np.ones(n), rtol=1e-6)
    lam = target[torch.arange(n), labels]  # the weight of each row's own example
    partner = torch.where(lam < 1, (target - torch.diag(lam)).argmax(dim=1), labels)  # the row mixed in
    assert sorted(partner.tolist()) == list(range(n))  # a shuffle of the batch
    mixed = partner != labels
    assert mixed.sum() >= n - 4  # a random permutation leaves few rows in place
    assert torch.allclose(lam[mixed], lam[mixed][0])  # one lambda per batch
    assert 0 < float(lam[mixed][0]) < 1
    expected = lam.view(-1, 1, 1, 1) * x + (1 - lam).view(-1, 1, 1, 1) * x[partner]
    torch.testing.assert_close(out, expected)  # the inputs mixed with the same lambda as the targets


def test_mixup_off_leaves_the_batch_and_labels_untouched_and_is_seeded():
    x = torch.randn(16, 1, 8, 8)
    labels = torch.arange(16) % 5
    out, target = augmenter(mixup={"p": 0.0, "alpha": 0.4})(x, labels)
    assert torch.equal(out, x) and torch.equal(target, labels)
    on = augmenter(mixup={"p": 1.0, "alpha": 0.4})
    runs = []
    for seed in (7, 7, 8):
        torch.manual_seed(seed)
        runs.append(on(x, labels))
    assert torch.equal(runs[0][0], runs[1][0]) and torch.equal(runs[0][1], runs[1][1])  # same seed, same mix
    assert not torch.equal(runs[0][0], runs[2][0])
    half = augmenter(mixup={"p": 0.5, "alpha": 0.4})
    torch.manual_seed(9)
    soft = sum(half(x, labels)[1].dim() == 2 for _ in range(400)) / 400  # p is per batch, not per example
    assert 0.4 < soft < 0.6


def test_noise_is_mixed_at_the_requested_snr():
    rng = np.random.default_rng(0)
    signal = torch.from_numpy(rng.normal(-20, 6, (4, 1, 64, 50)).astype(np.float32))
    noise = torch.from_numpy(rng.normal(-40, 3, (4, 1, 64, 50)).astype(np.float32))
    for snr in (0.0, 6.0, 20.0):
        mixed = mix_at_snr(signal, noise, torch.full((4,), snr))
        added = torch.pow(10, mixed / 10) - torch.pow(10, signal / 10)
        measured = 10 * torch.log10(torch.pow(10, signal / 10).mean(dim=(1, 2, 3)) / added.mean(dim=(1, 2, 3)))
        np.testing.assert_allclose(measured.numpy(), snr, atol=0.01)


def test_noise_from_a_bank_changes_only_chosen_examples():
    torch.manual_seed(3)
    bank = NoiseBank(np.full((500, 1, 16), -10.0, dtype=np.float32), [(0, 200), (200, 500)])
    x = torch.full((100, 1, 16, 30), -60.0)
    out, _ = augmenter(bank=bank, noise={"p": 0.5, "snr_db": [0, 0]})(x, torch.zeros(100, dtype=torch.long))
    changed = (out != x).flatten(1).any(dim=1)
    assert 30 < changed.sum() < 70
    # at 0 dB SNR the noise power equals the signal power: +3.01 dB everywhere for flat inputs
    np.testing.assert_allclose(out[changed].numpy(), -60.0 + 10 * math.log10(2), atol=1e-3)


@pytest.mark.parametrize("kind", ["logmel", "mfcc"])
def test_gain_equals_features_of_louder_audio(kind, monkeypatch):
    # broadband noise keeps every mel bin above the -100 dB floor, where a level change is exact
    signal = chirp(2.0, 22050, 2000, 4000) + 0.05 * np.random.default_rng(0).standard_normal(44100).astype(np.float32)
    extractor = FeatureExtractor(FeatureConfig(kind=kind, highpass_hz=0))
    quiet = torch.from_numpy(extractor(signal)).permute(1, 2, 0)[None]
    louder = torch.from_numpy(extractor(signal * 2.0)).permute(1, 2, 0)[None]
    gain = Augmenter(AugmentParams(gain_db=20 * math.log10(2.0)), kind, 128, [0.0] * quiet.shape[1], 2)
    monkeypatch.setattr(torch, "rand", lambda *shape, **kw: torch.ones(*shape))  # the draw that gives +gain_db
    np.testing.assert_allclose(gain.gain(quiet).numpy(), louder.numpy(), atol=2e-3)
