"""PFE maths and protocol on hand-made inputs: MLS formula, fusion, 10-fold thresholds, pairs parsing, nets."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from facelab.core.errors import FacelabError
from facelab.pfe.backbones import SphereNet
from facelab.pfe.data import BalancedBatchSampler, parse_pairs
from facelab.pfe.fusion import fuse
from facelab.pfe.losses import AMSoftmax, mls_loss, mutual_likelihood_score
from facelab.pfe.uncertainty import UncertaintyModule
from facelab.pfe.verify import best_threshold, kfold_accuracy, mls_scores, tar_at_far


def test_mls_equals_numpy_formula():
    rng = np.random.default_rng(0)
    mu1, mu2 = rng.normal(size=(5, 16)), rng.normal(size=(5, 16))
    s1, s2 = rng.uniform(0.01, 2, (5, 16)), rng.uniform(0.01, 2, (5, 16))
    expected = np.array([
        -0.5 * sum((mu1[i, l] - mu2[i, l]) ** 2 / (s1[i, l] + s2[i, l]) + math.log(s1[i, l] + s2[i, l]) for l in range(16))
        - 8 * math.log(2 * math.pi) for i in range(5)])
    t = torch.from_numpy
    got = mutual_likelihood_score(t(mu1), t(np.log(s1)), t(mu2), t(np.log(s2))).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-10)


def test_mls_scores_normalise_means_and_prefer_close_pairs():
    mu = np.array([[1.0, 0.0], [10.0, 0.5], [0.0, 3.0]])
    s = np.full((3, 2), 0.1)
    close, far = mls_scores(mu[:1], s[:1], mu[1:2], s[1:2])[0], mls_scores(mu[:1], s[:1], mu[2:], s[2:])[0]
    assert close > far
    # scaling a mean does not change its score: means are L2-normalised
    assert mls_scores(mu[:1], s[:1], 7 * mu[1:2], s[1:2])[0] == pytest.approx(close)


def test_mls_loss_averages_every_genuine_pair_and_only_those():
    rng = np.random.default_rng(1)
    mu, log_s = torch.from_numpy(rng.normal(size=(6, 4))), torch.from_numpy(rng.normal(size=(6, 4)))
    labels = torch.tensor([0, 0, 0, 1, 1, 2])
    n = torch.nn.functional.normalize(mu, dim=-1)
    pairs = [(i, j) for i in range(6) for j in range(i + 1, 6) if labels[i] == labels[j]]
    assert len(pairs) == 4
    expected = -np.mean([float(mutual_likelihood_score(n[i], log_s[i], n[j], log_s[j])) for i, j in pairs])
    assert float(mls_loss(mu, log_s, labels)) == pytest.approx(expected)
    with pytest.raises(ValueError):
        mls_loss(mu[:3], log_s[:3], torch.tensor([0, 1, 2]))


def test_fused_template_is_surer_than_each_member_and_leans_to_sharp_faces():
    rng = np.random.default_rng(2)
    mu = rng.normal(size=(4, 8))
    sigma_sq = rng.uniform(0.05, 1.0, (4, 8))
    sigma_sq[0] = 1e-3  # one sharp face
    fused_mu, fused_sq = fuse(mu, sigma_sq)
    assert (fused_sq < sigma_sq).all()
    unit = mu / np.linalg.norm(mu, axis=1, keepdims=True)
    assert np.abs(fused_mu - unit[0]).max() < np.abs(fused_mu - unit[1:]).max(axis=1).min()
    one_mu, one_sq = fuse(mu[:1], sigma_sq[:1])
    np.testing.assert_allclose(one_sq, sigma_sq[0])
    np.testing.assert_allclose(one_mu, unit[0])


def test_ten_fold_protocol_picks_threshold_on_the_other_nine_folds():
    # folds 0-8: genuine 0.8, impostor 0.2; fold 9 is shifted: genuine 0.45, impostor 0.1.
    scores, same, folds = [], [], []
    for k in range(10):
        g, i = (0.45, 0.1) if k == 9 else (0.8, 0.2)
        scores += [g, g, i, i]
        same += [True, True, False, False]
        folds += [k] * 4
    res = kfold_accuracy(np.array(scores), np.array(same), np.array(folds))
    # fold 9 gets the threshold of folds 0-8 (between 0.2 and 0.8), which rejects its genuine pairs;
    # an oracle choosing on fold 9 itself would score 100%.
    assert res.thresholds[9] == pytest.approx(0.5)
    assert res.accuracies[9] == pytest.approx(0.5)
    # every other fold trains on data including fold 9, so its threshold sits between 0.2 and 0.45
    np.testing.assert_allclose(res.thresholds[:9], 0.325)
    np.testing.assert_allclose(res.accuracies[:9], 1.0)
    assert res.mean == pytest.approx(0.95)


def test_best_threshold_never_splits_tied_scores():
    scores = np.array([0.1, 0.5, 0.5, 0.9])
    same = np.array([False, False, True, True])
    thr = best_threshold(scores, same)
    assert thr == pytest.approx(0.3) or thr == pytest.approx(0.7)


def test_tar_at_far_on_a_hand_made_case():
    impostor = np.arange(1000) / 1000.0  # 0.000 .. 0.999
    genuine = np.array([0.9985, 0.9995, 0.5, 0.99])
    scores = np.concatenate([genuine, impostor])
    same = np.concatenate([np.ones(4, bool), np.zeros(1000, bool)])
    tar, thr, far = tar_at_far(scores, same, 1e-3)
    assert thr == pytest.approx(0.998) and far == pytest.approx(1e-3)  # only 0.999 is accepted
    assert tar == pytest.approx(0.5)  # 0.9985 and 0.9995 beat the threshold, 0.99 and 0.5 do not


def _touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")


def test_parse_pairs_reads_lfw_layout_and_names_bad_lines(tmp_path):
    for name, n in [("Ann_A", 2), ("Bob_B", 1)]:
        for k in range(1, n + 1):
            _touch(tmp_path / name / f"{name}_{k:04d}.jpg")
    good = "2\t1\nAnn_A\t1\t2\nAnn_A\t1\tBob_B\t1\nAnn_A\t2\t1\nBob_B\t1\tAnn_A\t2\n"
    (tmp_path / "pairs.txt").write_text(good)
    pairs = parse_pairs(tmp_path / "pairs.txt", tmp_path)
    assert pairs.same.tolist() == [True, False, True, False]
    assert pairs.folds.tolist() == [0, 0, 1, 1]
    assert pairs.second[1] == tmp_path / "Bob_B" / "Bob_B_0001.jpg"
    (tmp_path / "bad.txt").write_text(good.replace("Ann_A\t2\t1\n", "Ann_A\t2\n"))
    with pytest.raises(FacelabError, match=r"bad.txt:4: expected a matched"):
        parse_pairs(tmp_path / "bad.txt", tmp_path)
    (tmp_path / "missing.txt").write_text(good.replace("Bob_B\t1\tAnn_A\t2", "Bob_B\t7\tAnn_A\t2"))
    with pytest.raises(FacelabError, match=r"missing.txt:5: .*Bob_B_0007.jpg not found"):
        parse_pairs(tmp_path / "missing.txt", tmp_path)
    (tmp_path / "nohead.txt").write_text(good.split("\n", 1)[1])
    with pytest.raises(FacelabError, match="header"):
        parse_pairs(tmp_path / "nohead.txt", tmp_path)


def test_balanced_sampler_draws_classes_times_samples():
    labels = np.array([0] * 10 + [1] * 3 + [2] * 5 + [3] * 1)
    sampler = BalancedBatchSampler(labels, classes=3, samples=4)
    idx = sampler.sample(np.random.default_rng(0))
    counts = np.bincount(labels[idx], minlength=4)
    assert len(idx) == 12 and sorted(counts[counts > 0]) == [4, 4, 4]
    with pytest.raises(FacelabError):
        BalancedBatchSampler(labels, 2, 1)


def test_uncertainty_module_starts_flat_and_has_one_output_per_dimension():
    module = UncertaintyModule(in_dim=20, embed_dim=8, hidden=16).eval()
    out = module(torch.randn(5, 20))
    assert out.shape == (5, 8)
    assert torch.allclose(out, torch.full_like(out, -7.0), atol=1e-2)


@pytest.mark.parametrize("depth", [20, 36])
def test_sphere_net_shapes(depth):
    net = SphereNet(depth, 64).eval()
    emb, feat = net(torch.randn(2, 3, 112, 96))
    assert emb.shape == (2, 64) and feat.shape == (2, 512 * 7 * 6)
    convs = sum(isinstance(m, torch.nn.Conv2d) for m in net.modules())
    assert convs == depth  # SphereFace counts conv layers: 4 stride-2 + 2 per residual unit


def test_am_softmax_margin_raises_the_loss():
    torch.manual_seed(0)
    emb, labels = torch.randn(8, 16), torch.randint(0, 4, (8,))
    head = AMSoftmax(16, 4, scale=30.0, margin=0.35)
    plain = AMSoftmax(16, 4, scale=30.0, margin=0.0)
    plain.load_state_dict(head.state_dict())
    assert head(emb, labels)[0] > plain(emb, labels)[0]


def test_the_before_figure_of_an_untrained_module_is_finite_on_a_feature_map_s_raw_scale():
    """pfe train's "MLS loss on a fixed pool sample: before -> after": a trained sphere20's feature map
    reaches 1e8 (measured on CelebA), and an untrained module's BatchNorm, without running statistics,
    passed that through to sigma^2 and logged 'nan' as the before figure. The untrained module is scored
    with the sample's batch statistics (on a copy: its own state is untouched); a trained one in eval mode."""
    from facelab.pfe.features import FeaturePool
    from facelab.pfe.train import pool_loss

    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(16), 8)
    pool = FeaturePool((rng.standard_normal((128, 64)) * 1e8).astype(np.float32),
                       rng.standard_normal((128, 8)).astype(np.float32), labels, np.zeros(128, bool))
    torch.manual_seed(0)
    module = UncertaintyModule(64, 8, hidden=16)
    before = pool_loss(module, pool, torch.device("cpu"), seed=0, batch=64)
    assert math.isfinite(before)
    assert int(module.bn1.num_batches_tracked) == 0 and float(module.bn1.running_mean.abs().max()) == 0.0
    module.train()
    module(torch.from_numpy(pool.features))  # one training-mode pass sets the running statistics
    assert math.isfinite(pool_loss(module, pool, torch.device("cpu"), seed=0, batch=64)) and not module.training
