"""StarGAN training end to end on a few dozen real faces: losses fall, resume is exact, Ctrl-C saves,
and the CLI's train -> test -> export -> fid -> edit chain works on the result."""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import safetensors.torch
import torch

from facelab.cli import main
from facelab.provenance.verify import verify
from facelab.core.errors import FacelabError
from facelab.io.images import read_image, write_image
from facelab.metrics.inception import FIDInceptionV3
from facelab.core.config import save_config
from facelab.stargan.checkpoint import checkpoint_path, load_generator, read_stargan_checkpoint
from facelab.stargan.config import StarGANConfig
from facelab.samples.celeba import make_sample_celeba
from facelab.stargan.split import load_split
from facelab.stargan.train import Trainer, train

from conftest import SHARED_DATA, differing_tensors, torchrun


@pytest.fixture(scope="session")
def celeba(tmp_path_factory) -> tuple[Path, Path]:
    """A CelebA-layout folder: ../shared/data/celeba when present, else 48 images of the 16 fetched people
    with their hand-made labels (facelab.samples.celeba.FETCHED_ATTRS)."""
    shared = SHARED_DATA / "celeba"
    if (shared / "list_attr_celeba.txt").is_file() and (shared / "images").is_dir():
        return shared / "images", shared / "list_attr_celeba.txt"
    return make_sample_celeba(tmp_path_factory.mktemp("celeba"), count=48, fetched=True)


def is_shared(celeba) -> bool:
    return celeba[1].parent == SHARED_DATA / "celeba"


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


# People held out and trained on: all 16 people of the fetched sample, or 2 + 4 of the shared CelebA's 160
# (60 test and 120 training images), so the short runs below see a few people often enough to learn them.
TEST_PEOPLE, TRAIN_PEOPLE = 2, 4


def small_config(celeba, out: Path, **changes) -> StarGANConfig:
    """The reference architecture scaled down (64 px, thin layers) so a run takes seconds on a CPU."""
    image_root, attr_path = celeba
    base = StarGANConfig(image_root=image_root, attr_path=attr_path, test_identities=TEST_PEOPLE,
                         train_identities=TRAIN_PEOPLE if is_shared(celeba) else 0, fid_images=8, image_size=64,
                         g_conv_dim=16, d_conv_dim=16, g_repeat_num=2, d_repeat_num=4, batch_size=8, target_iter=60,
                         num_iters_decay=0, d_train_repeat=2, g_lr=1e-3, d_lr=1e-3, model_dir=out, log_every=2,
                         preview_every=30, save_every=30, workers=0, device="cpu")
    return dataclasses.replace(base, **changes)


def read_log(out: Path) -> list[dict[str, float]]:
    with open(out / "logs" / "losses.csv", newline="") as fh:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(fh)]


@pytest.mark.slow  # about 40 s
def test_short_run_lowers_classification_and_reconstruction_losses(celeba, tmp_path):
    out = tmp_path / "run"
    cfg = small_config(celeba, out, target_iter=200, preview_every=100, save_every=100)
    train(cfg)
    rows = read_log(out)
    assert [r["step"] for r in rows] == list(range(2, 201, 2))
    first, last = rows[:5], rows[-5:]
    # Real people with their own labels (CelebA's 4 training people here: 120 images whose labels vary
    # between photos of one person): the domain classifier learns them (3.02 -> 0.71), the cycle
    # reconstruction falls more slowly while the adversarial game goes on (0.50 -> 0.36).
    for name, factor in (("D/loss_cls", 0.3), ("G/loss_rec", 0.9)):
        before, after = np.mean([r[name] for r in first]), np.mean([r[name] for r in last])
        assert after < factor * before, f"{name}: {before:.3f} -> {after:.3f}"
    # ... and it learns the images, not only how often each label is on: the best label-blind guess
    # (the training labels' frequencies) scores their entropy, 2.19 nats here
    p = load_split(cfg, "train").labels.mean(0).clip(1e-6, 1 - 1e-6)
    blind = float(-(p * np.log(p) + (1 - p) * np.log(1 - p)).sum())
    assert np.mean([r["D/loss_cls"] for r in last]) < 0.5 * blind
    assert (out / "samples" / "000100.jpg").is_file() and (out / "samples" / "000200.jpg").is_file()
    grid = read_image(out / "samples" / "000200.jpg")
    assert grid.shape == (8 * 64, 6 * 64, 3)  # 8 rows: input + 5 domains
    assert checkpoint_path(out).is_file() and checkpoint_path(out).with_name("stargan.prev.safetensors").is_file()
    assert (out / "logs" / "tb").is_dir() and (out / "config.yaml").is_file()
    # FID of the test split's translations, logged at the end (fid_every 10000 > target_iter)
    assert (out / "test_split.txt").read_text().splitlines() == load_split(cfg, "test").names
    with open(out / "logs" / "fid.csv", newline="") as fh:
        fid_rows = list(csv.DictReader(fh))
    assert [int(r["step"]) for r in fid_rows] == [200]
    assert float(fid_rows[0]["fid"]) > 0 and all(f"fid/{a}" in fid_rows[0] for a in StarGANConfig().selected_attrs)


def test_resume_repeats_the_uninterrupted_run(celeba, tmp_path):
    straight = train(small_config(celeba, tmp_path / "a", target_iter=6, save_every=3, preview_every=100))
    train(small_config(celeba, tmp_path / "b", target_iter=3, save_every=3, preview_every=100))
    resumed = train(small_config(celeba, tmp_path / "b", target_iter=6, save_every=3, preview_every=100))
    assert resumed.step == 6
    for name, value in straight.g.state_dict().items():
        assert torch.allclose(value, resumed.g.state_dict()[name], atol=1e-6), name
    assert [r["step"] for r in read_log(tmp_path / "b")] == [2, 4, 6]
    with pytest.raises(FacelabError, match="g_conv_dim cannot change"):
        train(small_config(celeba, tmp_path / "b", target_iter=9, g_conv_dim=8))


def test_ctrl_c_saves_a_checkpoint(celeba, tmp_path, monkeypatch):
    cfg = small_config(celeba, tmp_path / "run", target_iter=50, save_every=1000, preview_every=1000)
    real_step = Trainer.train_step

    def interrupt_at_4(self, *args):
        if self.step == 4:
            raise KeyboardInterrupt
        return real_step(self, *args)

    monkeypatch.setattr(Trainer, "train_step", interrupt_at_4)
    with pytest.raises(KeyboardInterrupt):
        train(cfg)
    _, _, step = load_generator(checkpoint_path(cfg.model_dir))
    assert step == 4


def test_bad_options_are_refused(celeba, tmp_path):
    with pytest.raises(FacelabError, match="--c-dim 4 does not match"):
        train(small_config(celeba, tmp_path / "x", c_dim=4))
    with pytest.raises(FacelabError, match="fewer than --batch-size"):  # 30 or 3 images of one person
        train(small_config(celeba, tmp_path / "y", train_identities=1, batch_size=64))
    with pytest.raises(FacelabError, match="fp16 needs a CUDA device"):
        train(small_config(celeba, tmp_path / "z", precision="fp16"))


def test_cli_sample_data(tmp_path):
    assert main(["stargan", "sample-data", "-o", str(tmp_path), "--count", "6"]) == 0
    lines = (tmp_path / "list_attr_celeba.txt").read_text().splitlines()
    assert lines[0] == "6" and len(lines[1].split()) == 40 and len(lines) == 8
    assert read_image(tmp_path / "images" / "000006.jpg").shape == (218, 178, 3)


def test_cli_train_test_export_fid_edit(celeba, sample_photos, tmp_path, capsys):
    image_root, attr_path = celeba
    out = tmp_path / "run"
    flags = ["--image-root", str(image_root), "--attr-path", str(attr_path), "--test-identities", "1",
             "--train-identities", "2", "--fid-images", "8", "--image-size", "64",
             "--g-conv-dim", "8", "--d-conv-dim", "8", "--g-repeat-num", "1", "--d-repeat-num", "4",
             "--batch-size", "4", "--target-iter", "4", "--preview-every", "4", "--save-every", "2",
             "--model-dir", str(out), "--workers", "0", "--device", "cpu", "--precision", "bf16"]
    assert main(["stargan", "train", *flags]) == 0
    ckpt = checkpoint_path(out)
    # resuming with a changed architecture is refused, continuing further works
    assert main(["stargan", "train", *flags, "--g-conv-dim", "16"]) == 2
    assert "g_conv_dim cannot change" in capsys.readouterr().err
    assert main(["stargan", "train", *flags, "--target-iter", "6"]) == 0
    assert load_generator(ckpt)[2] == 6

    assert main(["stargan", "test", "--checkpoint", str(ckpt), "--output-dir", str(tmp_path / "test"),
                 "--batch-size", "4", "--max-images", "8", "--device", "cpu"]) == 0
    held_out = (out / "test_split.txt").read_text().split()  # the one held-out person: 30 or 3 images
    assert read_image(tmp_path / "test" / "grids" / "00001.jpg").shape == (min(4, len(held_out)) * 64, 6 * 64, 3)
    written = sorted(p.stem for p in (tmp_path / "test" / "domains" / "Blond_Hair").glob("*.png"))
    assert written == sorted(Path(n).stem for n in held_out[:8])
    # translations are synthetic: each carries a signed manifest naming the action and the model, and the mark
    # (unreadable here: 64 px translations of a 6-iteration generator are noise at the mark's scale, confidence
    # ~4.7; the edited photo below reads it)
    grid = verify(tmp_path / "test" / "grids" / "00001.jpg")
    assert grid.by_facelab and grid.valid and grid.action == "attribute edit", grid
    assert grid.model_sha256 == hashlib.sha256(ckpt.read_bytes()).hexdigest()
    assert verify(tmp_path / "test" / "domains" / "Blond_Hair" / f"{Path(held_out[0]).stem}.png").valid

    for fmt in ("onnx", "torchscript"):
        assert main(["stargan", "export", "--checkpoint", str(ckpt), "--format", fmt]) == 0
        assert "max |export - pytorch|" in capsys.readouterr().out

    # the training run's split can be overridden: here the first 8 lines of the attribute file
    assert main(["stargan", "fid", "--checkpoint", str(ckpt), "--batch-size", "4", "--device", "cpu",
                 "--test-split", "lines", "--test-count", "8", "--json", str(tmp_path / "fid.json")]) == 0
    result = json.loads((tmp_path / "fid.json").read_text())
    assert result["extractor"] == "dlib-resnet128" and result["images"] == 8
    assert result["fid[dlib-resnet128]"] > 0
    assert set(result["per_domain"]) == {"Black_Hair", "Blond_Hair", "Brown_Hair", "Male", "Young"}
    assert result["real_vs_real"] > 0
    # the standard FID with user-supplied Inception-v3 weights (random ones the test makes)
    torch.manual_seed(0)
    weights = tmp_path / "pt_inception.safetensors"
    safetensors.torch.save_file({k: v.contiguous() for k, v in FIDInceptionV3().state_dict().items()}, str(weights))
    capsys.readouterr()
    assert main(["stargan", "fid", "--checkpoint", str(ckpt), "--device", "cpu", "--max-images", "4",
                 "--extractor", "inception-v3", "--inception-weights", str(weights)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["extractor"] == "inception-v3" and result["images"] == 4 and result["fid[inception-v3]"] > 0

    # edit a real photo that is not CelebA-aligned, and a photo without a face (exit status 1)
    photo = tmp_path / "photo.png"
    write_image(photo, sample_photos["astronaut"])
    write_image(tmp_path / "blank.png", np.full((200, 200, 3), 128, np.uint8))
    capsys.readouterr()
    assert main(["stargan", "edit", str(photo), str(tmp_path / "blank.png"), "--checkpoint", str(ckpt), "--set",
                 "Blond_Hair=1", "--set", "Male=0", "-o", str(tmp_path / "edited"), "--device", "cpu"]) == 1
    printed = capsys.readouterr().out
    edited = read_image(tmp_path / "edited" / "photo.png")
    assert edited.shape == sample_photos["astronaut"].shape and not np.array_equal(edited, sample_photos["astronaut"])
    report = verify(tmp_path / "edited" / "photo.png")
    assert report.by_facelab and report.valid and report.action == "attribute edit" and report.watermark, report
    assert not (tmp_path / "edited" / "blank.png").exists() and "no face found in: " in printed
    line = next(row for row in printed.splitlines() if "photo.png face 1:" in row)
    target = line.split("->")[1].split()
    assert "Blond_Hair" in target and not {"Black_Hair", "Brown_Hair", "Male"} & set(target)

    assert main(["stargan", "test", "--checkpoint", str(tmp_path / "nope.safetensors"), "--output-dir", "x"]) == 2
    assert "not found" in capsys.readouterr().err


def test_bf16_on_the_cpu_stays_finite_and_tracks_fp32(celeba, tmp_path):
    """bf16 runs the networks under autocast but the losses and the gradient penalty in fp32 outside it: 50
    iterations of a thin 32 px StarGAN stay finite; the last 20 iterations' classification and cycle losses are
    within 10 % of the fp32 run's from the same seed and batches (measured with seeds 0-2: at most 0.3 % and
    3.5 %), and the gradient penalty of the first 5 iterations within 2 % (at most 0.5 %). The penalty is
    compared early: by the end it is near 0.01 and the two GAN runs have parted, so its late mean differs by
    7-60 % between fp32 and bf16 runs before and after any change (a relative figure of a value near zero)."""
    rows = {}
    for precision in ("fp32", "bf16"):
        train(small_config(celeba, tmp_path / precision, precision=precision, target_iter=50, log_every=1,
                           image_size=32, g_conv_dim=8, d_conv_dim=8, g_repeat_num=1, d_repeat_num=3, batch_size=4,
                           preview_every=1000, save_every=1000, fid_every=0))
        rows[precision] = read_log(tmp_path / precision)
    assert len(rows["bf16"]) == 50
    assert np.isfinite([v for r in rows["bf16"][1:] for v in r.values()]).all()  # the generator's first step is the 2nd
    for name in ("D/loss_cls", "G/loss_rec"):
        late = {p: np.mean([r[name] for r in rows[p][-20:]]) for p in rows}
        assert abs(late["bf16"] - late["fp32"]) < 0.10 * late["fp32"], (name, late)
    early = {p: np.array([r["D/loss_gp"] for r in rows[p][:5]]) for p in rows}
    assert (abs(early["bf16"] - early["fp32"]) < 0.02 * early["fp32"]).all(), early


@pytest.mark.slow  # about 30 s: a run of two processes under torchrun
def test_two_processes_train_as_one_with_twice_the_batch(celeba, tmp_path):
    """torchrun with 2 processes and --batch-size 2 trains StarGAN exactly as one process with --batch-size 4
    (flips, target labels and penalty points drawn for the whole batch in both): the same losses, critic
    weights and generator outputs to float rounding; rank 0 alone speaks. (The weights of the generator's first
    convolution that read the constant label planes differ by up to 2 x lr: the instance norm after it leaves
    them gradients of rounding-noise size, which Adam scales up to steps of lr; its outputs do not differ.)"""
    tiny = dict(image_size=32, g_conv_dim=8, d_conv_dim=8, g_repeat_num=1, d_repeat_num=3, target_iter=4, log_every=1,
                preview_every=1000, save_every=1000, fid_every=0)
    save_config(small_config(celeba, tmp_path / "two", batch_size=2, **tiny), tmp_path / "two.yaml")
    proc = torchrun(["stargan", "train", "--config", str(tmp_path / "two.yaml")])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("trained 4 iterations") == 1
    train(small_config(celeba, tmp_path / "one", batch_size=4, **tiny))
    two, one = read_log(tmp_path / "two"), read_log(tmp_path / "one")
    assert [r["step"] for r in two] == [1, 2, 3, 4]
    for a, b in zip(two, one):
        assert np.allclose(list(a.values()), list(b.values()), rtol=1e-5, equal_nan=True), (a, b)
    states = [read_stargan_checkpoint(checkpoint_path(tmp_path / run)) for run in ("two", "one")]
    assert not differing_tensors(states[0]["D"], states[1]["D"])
    images, labels = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1, torch.eye(5)[:4]
    with torch.no_grad():
        outputs = [load_generator(checkpoint_path(tmp_path / run))[0](images, labels) for run in ("two", "one")]
    assert torch.allclose(*outputs, atol=1e-5)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_cuda_precisions_train(celeba, tmp_path, precision):
    """fp16 with its loss scalers (the gradient penalty's gradient taken of the scaled score), bf16, fp32."""
    trainer = train(small_config(celeba, tmp_path, device="cuda:0", precision=precision, target_iter=6,
                                 preview_every=1000, save_every=1000, fid_every=0))
    assert trainer.step == 6 and all(np.isfinite(v) for v in trainer.last.values())
