"""The sphere backbone path end to end on a tiny real-face folder: AM-softmax training, resume,
PFE on the frozen sphere features, and the checked ONNX/TorchScript export of both networks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from facelab.cli import main
from facelab.core.checkpoint import load_checkpoint
from facelab.io.images import read_image, write_image
from facelab.pfe.backbones import align_sphere
from facelab.pfe.features import FaceFinder
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
