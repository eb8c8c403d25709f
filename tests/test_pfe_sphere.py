"""The sphere backbone path end to end on a tiny real-face folder: AM-softmax training, resume,
PFE on the frozen sphere features, and the checked ONNX/TorchScript export of both networks."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

from facelab.cli import main
from facelab.core.checkpoint import load_checkpoint
from facelab.io.images import read_image, write_image
from facelab.pfe.backbones import align_sphere
from facelab.pfe.config import BackboneConfig, PFEConfig
from facelab.pfe.features import FaceFinder
from facelab.pfe.train import train_backbone, train_pfe
from facelab.samples.identities import make_identity_samples


@pytest.fixture(scope="module")
def aligned_faces(tmp_path_factory):
    """112x96 aligned crops of the two bundled people, as the PFE preprocessing would write them."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("sphere")
    make_identity_samples(root / "raw", per_identity=6)
    finder = FaceFinder()
    for person in sorted(p for p in (root / "raw").iterdir() if p.is_dir()):
        for path in sorted(person.iterdir()):
            image = read_image(path)
            write_image(root / "aligned" / person.name / (path.stem + ".png"), align_sphere(image, finder.find(image))[:, :, ::-1])
    return root / "aligned"


def test_sphere_backbone_trains_resumes_and_exports_with_pfe(aligned_faces, tmp_path):
    bb = tmp_path / "backbone"
    common = ["--data", str(aligned_faces), "--model-dir", str(bb), "--depth", "20", "--embedding-size", "32",
              "--batch-size", "8", "--workers", "0", "--lr", "0.01", "--log-every", "1", "--device", "cpu"]
    assert main(["pfe", "train-backbone", *common, "--target-iter", "3"]) == 0
    assert load_checkpoint(bb / "backbone.safetensors")["step"] == 3
    assert main(["pfe", "train-backbone", *common, "--target-iter", "5"]) == 0
    assert load_checkpoint(bb / "backbone.safetensors")["step"] == 5
    rows = np.loadtxt(bb / "backbone.csv", delimiter=",", skiprows=1)
    assert rows[:, 0].tolist() == [1, 2, 3, 4, 5] and np.isfinite(rows).all()
    assert main(["pfe", "train-backbone", *common, "--target-iter", "6", "--depth", "36"]) == 2  # fixed option

    pfe = tmp_path / "pfe"
    assert main(["pfe", "train", "--data", str(aligned_faces), "--model-dir", str(pfe), "--backbone", str(bb),
                 "--aligned", "--hidden", "16", "--copies", "2", "--classes-per-batch", "2",
                 "--samples-per-class", "4", "--target-iter", "3", "--device", "cpu"]) == 0
    with np.load(pfe / "pool.npz") as z:
        assert z["features"].shape == (24, 512 * 7 * 6) and z["mu"].shape == (24, 32)
    out = tmp_path / "export"
    assert main(["pfe", "export", "--model", str(pfe), "-o", str(out)]) == 0
    import onnxruntime as ort

    session = ort.InferenceSession(str(out / "backbone.onnx"), providers=["CPUExecutionProvider"])
    emb, feat = session.run(None, {"image": np.zeros((3, 3, 112, 96), np.float32)})
    assert emb.shape == (3, 32) and feat.shape == (3, 512 * 7 * 6)
    assert (out / "backbone.pt").is_file() and (out / "uncertainty.onnx").is_file()


@pytest.fixture(scope="module")
def backbone(aligned_faces, tmp_path_factory):
    """A sphere20 backbone (32-d embedding) trained for 3 steps: the frozen feature extractor of the PFE tests."""
    bb = tmp_path_factory.mktemp("backbone")
    train_backbone(BackboneConfig(data=str(aligned_faces), model_dir=str(bb), depth=20, embedding_size=32,
                                  batch_size=8, workers=0, lr=0.01, target_iter=3, device="cpu"))
    return bb


def _late_losses(runs: dict[str, Path], log: str, column: str) -> dict[str, float]:
    """Each run's mean ``column`` over its last 20 iterations, once every one of its 50 values is checked finite."""
    late = {}
    for name, model_dir in runs.items():
        with open(model_dir / f"{log}.csv", newline="") as fh:
            curve = np.array([float(r[column]) for r in csv.DictReader(fh)])
        assert len(curve) == 50 and np.isfinite(curve).all(), name
        late[name] = curve[-20:].mean()
    return late


def test_pfe_bf16_on_the_cpu_stays_finite_and_tracks_fp32(aligned_faces, backbone, tmp_path):
    """The uncertainty module runs under bf16 autocast, the MLS loss in fp32 outside it: 50 iterations on the
    same backbone stay finite and the mean loss of the last 20 is within 10 % of the fp32 run's from the same
    seed and batches (measured: %)."""
    for precision in ("fp32", "bf16"):
        train_pfe(PFEConfig(data=str(aligned_faces), model_dir=str(tmp_path / precision), backbone=str(backbone),
                            aligned=True, hidden=16, classes_per_batch=2, samples_per_class=4, log_every=1,
                            target_iter=50, device="cpu", precision=precision))
    late = _late_losses({p: tmp_path / p for p in ("fp32", "bf16")}, "pfe", "mls_loss")
    print(late)
    assert abs(late["bf16"] - late["fp32"]) < 0.10 * abs(late["fp32"]), late


@pytest.mark.slow  # about 2 minutes
def test_backbone_bf16_on_the_cpu_stays_finite_and_tracks_fp32(aligned_faces, tmp_path):
    """The sphere network runs under bf16 autocast, the AM-softmax in fp32 outside it: 50 iterations stay
    finite and the mean loss of the last 20 is within 10 % of the fp32 run's (measured: %)."""
    for precision in ("fp32", "bf16"):
        train_backbone(BackboneConfig(data=str(aligned_faces), model_dir=str(tmp_path / precision), depth=20,
                                      embedding_size=32, batch_size=4, workers=0, lr=0.001, log_every=1,
                                      target_iter=50, device="cpu", precision=precision))
    late = _late_losses({p: tmp_path / p for p in ("fp32", "bf16")}, "backbone", "loss")
    print(late)
    assert abs(late["bf16"] - late["fp32"]) < 0.10 * late["fp32"], late
