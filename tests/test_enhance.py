"""The face enhancer on real faces: degradations, the held-out split by person, training (beats bicubic on
people it never saw, resumes exactly, Ctrl-C saves), ``faceset enhance`` (metadata kept, originals kept,
packs, never twice) and the one-line errors of its commands.

The networks here are tiny (32 px faces, 8x8 folded grid) so every test takes seconds on two cores; the
real figures come from ``facelab enhancer eval`` on a full run (docs/enhance.md).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from facelab.cli import main
from facelab.core.config import save_config
from facelab.core.errors import FacelabError
from facelab.enhance.apply import ENHANCED_KEY, Enhancer, enhance_faceset, load_enhancer
from facelab.enhance.config import EnhancerConfig
from facelab.enhance.data import load_faces, people_in, split_people
from facelab.enhance.degrade import LEVELS, degrade, random_degradation
from facelab.enhance.evaluate import score, summary
from facelab.enhance.network import FaceEnhancer, restore
from facelab.enhance.train import Trainer, train
from facelab.face.masks.labels import label_mask, set_label
from facelab.face.metadata import FaceMeta, read_face, write_face
from facelab.faceset.store import PACK_NAME, Faceset, loose_faces, pack
from facelab.io.images import write_image
from facelab.samples.celeba import make_sample_celeba
from facelab.xseg.config import XSegConfig

from conftest import SHARED_DATA, interrupt_at, torchrun

pytestmark = pytest.mark.usefixtures("one_thread")

SIZE = 32
TINY = dict(size=SIZE, patch_size=SIZE, channels=16, blocks=1, batch_size=8, lr=5e-4, eval_people=1, eval_faces=12,
            eval_every=0, preview_every=10_000, log_every=5, device="cpu", seed=3)


@pytest.fixture(scope="module")
def celeba(tmp_path_factory) -> Path:
    """A CelebA-layout folder: 6 faces each of 8 people of ../shared/data/celeba when present, else the
    sample CelebA made from the two bundled portraits (two people)."""
    out = tmp_path_factory.mktemp("celeba")
    shared = SHARED_DATA / "celeba"
    if not (shared / "identity_CelebA.txt").is_file():
        make_sample_celeba(out, count=24)
        return out
    people: dict[str, list[str]] = {}
    for line in (shared / "identity_CelebA.txt").read_text().split("\n"):
        if line.strip():
            name, who = line.split()
            people.setdefault(who, []).append(name)
    (out / "images").mkdir()
    lines = []
    for who in sorted(people)[:8]:
        for name in people[who][:6]:
            shutil.copy(shared / "images" / name, out / "images" / name)
            lines.append(f"{name} {who}\n")
    (out / "identity_CelebA.txt").write_text("".join(lines))
    return out


@pytest.fixture(scope="module")
def trained(celeba, tmp_path_factory) -> Path:
    """A tiny enhancer trained for 150 iterations on all but one person of ``celeba``."""
    model_dir = tmp_path_factory.mktemp("enhancer")
    train(EnhancerConfig(**TINY, target_iter=150), [celeba], model_dir)
    return model_dir


def make_faceset(folder: Path, faces: np.ndarray, ext: str = ".jpg") -> Path:
    """Faces with hand-made metadata (no detector needed) and an XSeg label each."""
    rng = np.random.default_rng(0)
    for i, face in enumerate(faces):
        s = face.shape[0]
        landmarks = rng.uniform(0.2 * s, 0.8 * s, (68, 2))
        meta = FaceMeta(source_filename=f"{i:05d}.png", source_frame=None, source_size=(s, s), face_index=0,
                        source_rect=[0.0, 0.0, float(s), float(s)], source_landmarks=landmarks, landmarks=landmarks,
                        image_to_face=np.eye(2, 3), face_type="whole", size=s, detector="s3fd", landmarker="fan")
        label = np.zeros((s, s), np.uint8)
        label[s // 4 : 3 * s // 4, s // 4 : 3 * s // 4] = 1
        set_label(meta, label)
        write_face(folder / f"{i:05d}{ext}", face, meta)
    return folder


def test_degradations_shrink_by_their_level_and_repeat_with_the_seed(celeba):
    face = load_faces(people_in(celeba)[sorted(people_in(celeba))[0]][:1], 128)[0]
    for level, d in LEVELS.items():
        small, enlarged = degrade(face, d, np.random.default_rng(1))
        assert small.shape == (round(128 / d.scale),) * 2 + (3,) and enlarged.shape == face.shape
        again = degrade(face, d, np.random.default_rng(1))[1]
        assert np.array_equal(enlarged, again), level
    worse = [np.abs(degrade(face, d, np.random.default_rng(1))[1].astype(int) - face).mean() for d in LEVELS.values()]
    assert worse == sorted(worse)  # each level loses more than the one before
    d = random_degradation(np.random.default_rng(5))
    assert 2 <= d.scale <= 4 and 0 <= d.blur <= 1 and 40 <= d.jpeg <= 95 and 0 <= d.noise <= 4


def test_an_untrained_enhancer_returns_its_input_at_any_size():
    """The last convolution starts at zero: an untrained network gives back the bicubic face, and a face of
    another size gets no correction at all."""
    enhancer = Enhancer(FaceEnhancer(8, 1).eval(), EnhancerConfig(size=SIZE), torch.device("cpu"))
    rng = np.random.default_rng(0)
    faces = [rng.random((n, n, 3)).astype(np.float32) for n in (SIZE, 20, 48)]
    for face, out in zip(faces, enhancer.enhance(faces)):
        assert out.shape == face.shape and np.abs(out - face).max() < 1e-6


def test_the_split_holds_out_whole_people_of_every_folder(celeba, tmp_path):
    lfw = tmp_path / "lfw"  # LFW's layout: one sub-folder per person, images without metadata
    faces = load_faces(sorted((celeba / "images").iterdir())[:6], 40)
    for i, face in enumerate(faces):
        write_image(lfw / f"person_{i % 3}" / f"{i}.jpg", face)
    flat = make_faceset(tmp_path / "one_person", faces[:3])
    train_paths, held = split_people([celeba, lfw, flat], 1, seed=0)
    ids = dict(line.split() for line in (celeba / "identity_CelebA.txt").read_text().splitlines())
    who = {p: ids.get(p.name, p.parent.name) for p in [*train_paths, *held]}
    assert len(who) == len(ids) + 6 + 3
    assert not {who[p] for p in held} & {who[p] for p in train_paths}  # nobody on both sides
    assert len({who[p] for p in held if p.name in ids}) == 1 and len({who[p] for p in held if lfw in p.parents}) == 1
    assert set(loose_faces(flat)) <= set(train_paths)  # a faceset is one person: nobody to hold out
    assert split_people([celeba, lfw, flat], 1, seed=0) == (train_paths, held)


def test_training_beats_bicubic_on_people_it_never_saw(trained, celeba):
    cfg = EnhancerConfig(**TINY)
    held = load_faces(split_people([celeba], cfg.eval_people, cfg.seed)[1], SIZE)
    enhancer = load_enhancer(trained, "cpu")
    figures = summary(score(enhancer.restore, held, cfg.seed))
    for level in ("x3", "x4"):  # x2 needs longer training: bicubic is close to the truth there (docs/enhance.md)
        row = figures[level]
        assert row["psnr"] > row["psnr_bicubic"] and row["ssim"] > row["ssim_bicubic"], (level, row)
    rows = (trained / "eval.csv").read_text().splitlines()
    assert rows[0].startswith("step,psnr_x2,psnr_bicubic_x2,ssim_x2") and rows[-1].startswith("150,")
    assert (trained / "preview.png").is_file()


def test_resume_repeats_an_uninterrupted_run_and_fixed_options_are_refused(celeba, tmp_path, capsys):
    whole, halves = tmp_path / "whole", tmp_path / "halves"
    train(EnhancerConfig(**TINY, target_iter=8), [celeba], whole)
    train(EnhancerConfig(**TINY, target_iter=4), [celeba], halves)
    result = train(EnhancerConfig(**TINY, target_iter=8), [celeba], halves)
    assert result.iteration == 8
    a, b = (load_enhancer(d, "cpu").model.state_dict() for d in (whole, halves))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [r.split(",")[0] for r in (halves / "losses.csv").read_text().splitlines()[1:]] == ["5"]
    code = main(["enhancer", "train", "--data", str(celeba), "--model-dir", str(halves), "--channels", "32"])
    assert code == 2 and "channels cannot change once a model exists" in capsys.readouterr().err


def test_ctrl_c_saves_where_it_stopped(celeba, tmp_path, monkeypatch):
    trainer = Trainer(EnhancerConfig(**TINY, target_iter=50), [celeba], tmp_path / "m")
    interrupt_at(trainer, 3, monkeypatch)
    try:
        result = trainer.run()
    finally:
        trainer.close()
    assert result.stopped == "interrupted" and result.iteration == 3
    assert load_enhancer(tmp_path / "m", "cpu").iteration == 3


def test_faceset_enhance_keeps_metadata_and_originals(trained, celeba, tmp_path, capsys):
    faces = load_faces(sorted((celeba / "images").iterdir())[:4], 48)  # not the enhancer's size: correction scaled
    folder = make_faceset(tmp_path / "aligned", faces)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    assert main(["faceset", "enhance", str(folder), "--enhancer-dir", str(trained), "--device", "cpu"]) == 0
    assert "enhanced 4 faces into" in capsys.readouterr().out
    out = tmp_path / "aligned_enhanced"
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before  # the originals are untouched
    changed = 0
    for name in before:
        (old, old_meta), (new, new_meta) = read_face(folder / name), read_face(out / name)
        assert new.shape == old.shape
        stamp = new_meta.extra.pop(ENHANCED_KEY)
        assert stamp == {"enhancer": trained.name, "iteration": 150, "size": SIZE}
        assert new_meta.to_json() == old_meta.to_json()  # alignment, landmarks, XSeg label: all kept
        assert np.array_equal(label_mask(new_meta), label_mask(old_meta))
        changed += np.abs(new.astype(int) - old).mean() > 0.5
    assert changed == 4
    code = main(["faceset", "enhance", str(folder), "--enhancer-dir", str(trained), "--device", "cpu"])
    assert code == 2 and "already exists and is not an empty folder" in capsys.readouterr().err


def test_in_place_and_packed_facesets_and_no_face_is_enhanced_twice(trained, celeba, tmp_path):
    faces = load_faces(sorted((celeba / "images").iterdir())[:3], SIZE)
    loose = make_faceset(tmp_path / "loose", faces, ".png")
    first = enhance_faceset(loose, trained, in_place=True, device="cpu")
    assert (first.enhanced, first.skipped, first.folder) == (3, 0, loose)
    after = {p.name: p.read_bytes() for p in loose.iterdir()}
    again = enhance_faceset(loose, trained, in_place=True, device="cpu")
    assert (again.enhanced, again.skipped) == (0, 3)
    assert {p.name: p.read_bytes() for p in loose.iterdir()} == after
    packed = make_faceset(tmp_path / "packed", faces)
    pack(packed)
    stats = enhance_faceset(packed, trained, tmp_path / "packed_out", device="cpu")
    assert stats.enhanced == 3 and [p.name for p in (tmp_path / "packed_out").iterdir()] == [PACK_NAME]
    result = Faceset.open(tmp_path / "packed_out")
    assert all(ENHANCED_KEY in m.extra for m in result.metas)
    assert not any(ENHANCED_KEY in m.extra for m in Faceset.open(packed).metas)
    copied = enhance_faceset(loose, trained, tmp_path / "copy", device="cpu")  # already enhanced: copied as they are
    assert (copied.enhanced, copied.skipped) == (0, 3)
    assert {p.name: p.read_bytes() for p in (tmp_path / "copy").iterdir()} == after


def test_bad_input_is_one_clear_line(trained, celeba, tmp_path, capsys):
    xseg = tmp_path / "xseg"
    xseg.mkdir()
    save_config(XSegConfig(), xseg / "config.yaml")
    faceset = make_faceset(tmp_path / "aligned", load_faces(sorted((celeba / "images").iterdir())[:1], SIZE))
    cases = [
        (["enhancer", "train", "--data", str(tmp_path / "missing"), "--model-dir", str(tmp_path / "m")],
         "is not a folder; give a folder of face images"),
        (["enhancer", "train", "--data", str(celeba), "--model-dir", str(tmp_path / "m2"), "--patch-size", "30"],
         "patch_size 30 is not a multiple of 4"),
        (["enhancer", "train", "--data", str(celeba), "--model-dir", str(xseg)], "is an XSeg model dir"),
        (["faceset", "enhance", str(faceset), "--enhancer-dir", str(tmp_path / "none")], "is not a face enhancer"),
        (["faceset", "enhance", str(faceset), "--enhancer-dir", str(trained), "--in-place", "-o", str(tmp_path / "o")],
         "either --in-place or -o/--output"),
        (["enhancer", "eval", "--model-dir", str(trained), "--data", str(faceset)], "no held-out faces"),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, err


def test_eval_reports_every_level_and_writes_the_grid(trained, celeba, tmp_path, capsys):
    grid, report = tmp_path / "grid.png", tmp_path / "report.json"
    argv = ["enhancer", "eval", "--model-dir", str(trained), "--data", str(celeba), "--grid", str(grid), "-o", str(report),
            "--device", "cpu"]
    assert main(argv) == 0
    data = json.loads(report.read_text())
    assert json.loads(capsys.readouterr().out) == data
    assert set(data["levels"]) == set(LEVELS) and data["iteration"] == 150
    row = data["levels"]["x2"]
    assert {"psnr", "psnr_std", "psnr_bicubic", "ssim", "ssim_bicubic_std", "psnr_better", "faces"} <= set(row)
    assert abs(row["psnr_gain"] - (row["psnr"] - row["psnr_bicubic"])) < 1e-9
    image = cv2.imread(str(grid))
    assert image.shape == (20 + 2 * len(LEVELS) * SIZE, 4 * SIZE, 3)


def test_restore_matches_the_network_in_batches():
    model = FaceEnhancer(8, 1).eval()
    torch.nn.init.normal_(model.tail.weight, std=0.05)
    faces = np.random.default_rng(0).integers(0, 256, (5, SIZE, SIZE, 3), dtype=np.uint8)
    whole = restore(model, faces, torch.device("cpu"), batch_size=5)
    assert np.allclose(restore(model, faces, torch.device("cpu"), batch_size=2), whole, atol=1e-6)
    assert whole.min() >= 0 and whole.max() <= 1 and not np.allclose(whole, faces / 255, atol=1e-3)


def test_config_refuses_a_patch_larger_than_the_face():
    with pytest.raises(FacelabError, match="patch_size 64 is larger than the face size 32"):
        EnhancerConfig(size=32, patch_size=64).check()


@pytest.mark.slow  # about 15 s: torchrun starts two processes
def test_torchrun_is_refused_in_one_line(celeba, tmp_path):
    """The enhancer's batches are not split between processes: under torchrun it stops before any work."""
    proc = torchrun(["enhancer", "train", "--data", str(celeba), "--model-dir", str(tmp_path / "m"),
                     "--device", "cpu", "--target-iter", "1"])
    assert proc.returncode != 0
    assert "facelab: error: facelab enhancer train runs in one process" in proc.stderr, proc.stderr[-3000:]
    assert not (tmp_path / "m" / "enhancer.safetensors").exists()
