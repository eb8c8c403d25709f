"""Every bad input through the real CLI (``python -m facelab``): exit code 2, exactly one line on stderr that
names the file or option and the fix, no traceback, and nothing changed or created outside the output folder.

Each case builds its inputs in a fresh folder and returns the command, a text the error line must hold
(the file or option it names) and the command's output folder (None: the command writes nothing).
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
import pytest
import safetensors.torch
import torch

from facelab.core.checkpoint import save_checkpoint
from facelab.core.config import save_config
from facelab.faceset.store import PACK_NAME, _write_pack, pack
from facelab.pfe.config import PFEConfig
from facelab.stargan.config import StarGANConfig
from facelab.xseg.config import XSegConfig

from conftest import REPO

Case = Callable[[Path], tuple[list[str], str, "Path | None"]]
CASES: dict[str, Case] = {}


def case(fn: Case) -> Case:
    CASES[fn.__name__] = fn
    return fn


@pytest.fixture(scope="module")
def one_face(sample_photos, tmp_path_factory) -> Path:
    """One real aligned face with its metadata (the hopper portrait)."""
    from facelab.extract.config import ExtractConfig
    from facelab.extract.pipeline import extract

    root = tmp_path_factory.mktemp("one_face")
    cv2.imwrite(str(root / "hopper.jpg"), sample_photos["hopper"])
    extract(root / "hopper.jpg", root / "aligned", ExtractConfig(size=64, workers=1))
    return next((root / "aligned").glob("*.jpg"))


@pytest.fixture(scope="module")
def clip(sample_clips) -> Path:
    return sample_clips[0]


# --------------------------------------------------------------------------------------------- packs


def _pak(folder: Path, names: list[str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    _write_pack(folder / PACK_NAME, names, [b"\xff\xd8face"] * len(names))
    return folder / PACK_NAME


@case
def unpack_member_climbing_out(tmp):
    pak = _pak(tmp / "ws" / "faces", ["00001_0.jpg", "../../x.txt"])
    return ["faceset", "unpack", str(pak.parent)], f"{pak} names a member '../../x.txt'", None


@case
def unpack_member_with_an_absolute_path(tmp):
    pak = _pak(tmp / "faces", [str(tmp / "elsewhere.jpg")])
    return ["faceset", "unpack", str(pak.parent)], f"{pak} names a member", None


@case
def pack_holding_only_the_magic(tmp):
    (tmp / "faces").mkdir()
    (tmp / "faces" / PACK_NAME).write_bytes(b"FLPAK001")
    return ["faceset", "info", str(tmp / "faces")], f"{tmp / 'faces' / PACK_NAME} is damaged", None


@case
def pack_with_a_dict_index(tmp):
    (tmp / "faces").mkdir()
    index = json.dumps({"00001_0.jpg": [0, 4]}).encode()
    (tmp / "faces" / PACK_NAME).write_bytes(b"FLPAK001" + struct.pack("<Q", len(index)) + index + b"face")
    return ["faceset", "info", str(tmp / "faces")], f"{tmp / 'faces' / PACK_NAME} is damaged", None


# --------------------------------------------------------------------------------------------- numbers


@case
def extract_negative_size(tmp, one_face):
    return ["extract", str(one_face), "-o", str(tmp / "out"), "--size", "-5"], "--size -5 is out of range", None


@case
def extract_yaml_size_zero(tmp, one_face):
    (tmp / "extract.yaml").write_text("size: 0\n")
    return (["extract", str(one_face), "-o", str(tmp / "out"), "--config", str(tmp / "extract.yaml")],
            f"{tmp / 'extract.yaml'}: size=0 is out of range", None)


@case
def extract_yaml_negative_size(tmp, one_face):
    (tmp / "extract.yaml").write_text("size: -64\n")
    return (["extract", str(one_face), "-o", str(tmp / "out"), "--config", str(tmp / "extract.yaml")],
            f"{tmp / 'extract.yaml'}: size=-64 is out of range", None)


@case
def extract_yaml_jpeg_quality(tmp, one_face):
    (tmp / "extract.yaml").write_text("jpeg_quality: 500\n")
    return (["extract", str(one_face), "-o", str(tmp / "out"), "--config", str(tmp / "extract.yaml")],
            "jpeg_quality=500 is out of range; use 1..100", None)


@case
def frames_fps_zero(tmp, clip):
    return ["frames", str(clip), "-o", str(tmp / "frames"), "--fps", "0"], "fps=0.0 is out of range", None


@case
def frames_negative_fps(tmp, clip):
    return ["frames", str(clip), "-o", str(tmp / "frames"), "--fps", "-1"], "fps=-1.0 is out of range", None


@case
def frames_jpeg_quality_500(tmp, clip):
    return (["frames", str(clip), "-o", str(tmp / "frames"), "--format", "jpg", "--jpeg-quality", "500"],
            "jpeg_quality=500 is out of range", None)


def _frames_folder(tmp: Path) -> Path:
    (tmp / "merged").mkdir()
    cv2.imwrite(str(tmp / "merged" / "00001.png"), np.zeros((32, 32, 3), np.uint8))
    return tmp / "merged"


@case
def video_fps_zero(tmp):
    return (["video", "--frames", str(_frames_folder(tmp)), "-o", str(tmp / "out.mp4"), "--fps", "0"],
            "fps=0.0 is out of range", None)


@case
def video_negative_fps(tmp):
    return (["video", "--frames", str(_frames_folder(tmp)), "-o", str(tmp / "out.mp4"), "--fps", "-5"],
            "fps=-5.0 is out of range", None)


@case
def resize_size_zero(tmp, one_face):
    (tmp / "faces").mkdir()
    shutil.copy(one_face, tmp / "faces")
    return (["faceset", "resize", str(tmp / "faces"), "-o", str(tmp / "out"), "--size", "0"],
            "size=0 is out of range", None)


@case
def sort_best_count_zero(tmp, one_face):
    (tmp / "faces").mkdir()
    shutil.copy(one_face, tmp / "faces")
    return ["faceset", "sort", str(tmp / "faces"), "--by", "best", "--best-count", "0"], "best_count=0", None


@case
def train_batch_size_zero(tmp):
    return ["train", "--model-dir", str(tmp / "model"), "--batch-size", "0"], "--batch-size 0 is out of range", None


@case
def xseg_train_yaml_negative_lr(tmp):
    (tmp / "xseg.yaml").write_text("lr: -0.1\n")
    return (["xseg", "train", "--faceset", str(tmp), "--model-dir", str(tmp / "xseg"), "--config", str(tmp / "xseg.yaml")],
            f"{tmp / 'xseg.yaml'}: lr=-0.1 is out of range", None)


@case
def enhancer_train_yaml_negative_lr(tmp):
    (tmp / "enhancer.yaml").write_text("lr: -0.1\n")
    return (["enhancer", "train", "--data", str(tmp), "--model-dir", str(tmp / "enhancer"), "--config",
             str(tmp / "enhancer.yaml")], f"{tmp / 'enhancer.yaml'}: lr=-0.1 is out of range", None)


@case
def faceset_enhance_jpeg_quality_zero(tmp, one_face):
    (tmp / "faces").mkdir()
    shutil.copy(one_face, tmp / "faces")
    return (["faceset", "enhance", str(tmp / "faces"), "--enhancer-dir", str(tmp / "enhancer"), "--jpeg-quality", "0"],
            "jpeg_quality=0 is out of range", None)


@case
def faceset_enhance_without_an_enhancer(tmp, one_face):
    (tmp / "faces").mkdir()
    shutil.copy(one_face, tmp / "faces")
    return (["faceset", "enhance", str(tmp / "faces"), "--enhancer-dir", str(tmp / "nothing")],
            f"{tmp / 'nothing'} is not a face enhancer", None)


@case
def merge_super_resolution_without_an_enhancer(tmp):
    frames = _frames_folder(tmp)
    return (["merge", "--model-dir", str(tmp / "model"), "--input-dir", str(frames), "--output-dir", str(tmp / "out"),
             "--super-resolution", "50"], "--super-resolution 50 runs a face enhancer", None)


@case
def editor_port_out_of_range(tmp, one_face):
    return ["xseg", "edit", str(one_face.parent), "--port", "70000", "--no-browser"], "--port 70000", None


# --------------------------------------------------------------------------------------------- folders and files


@case
def a_folder_with_a_pack_and_loose_faces(tmp, one_face):
    (tmp / "faces").mkdir()
    shutil.copy(one_face, tmp / "faces" / "00001_0.jpg")
    pack(tmp / "faces")
    shutil.copy(one_face, tmp / "faces" / "00002_0.jpg")
    return ["faceset", "info", str(tmp / "faces")], f"{tmp / 'faces'} holds both {PACK_NAME} and 1 loose faces", None


@case
def merge_into_its_own_input(tmp):
    frames = _frames_folder(tmp)
    return (["merge", "--model-dir", str(tmp / "model"), "--input-dir", str(frames), "--output-dir", str(frames)],
            f"--output-dir {frames} is the input folder", None)


@case
def huge_png(tmp):
    def chunk(kind: bytes, data: bytes) -> bytes:
        import zlib

        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    import zlib

    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 100000, 100000, 8, 2, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(b"\0" * 100)) + chunk(b"IEND", b""))
    (tmp / "huge.png").write_bytes(png)
    return ["extract", str(tmp / "huge.png"), "-o", str(tmp / "out")], f"{tmp / 'huge.png'} claims more pixels", tmp / "out"


@case
def train_model_dir_is_a_file(tmp):
    (tmp / "model").write_text("not a folder")
    return ["train", "--model-dir", str(tmp / "model")], f"{tmp / 'model'} is a file, not a folder", None


@case
def train_invalid_yaml(tmp):
    (tmp / "train.yaml").write_text("batch_size: [1, 2\n")
    return (["train", "--model-dir", str(tmp / "model"), "--config", str(tmp / "train.yaml")],
            f"config file {tmp / 'train.yaml'} is not valid YAML", None)


@case
def pfe_eval_one_fold(tmp):
    (tmp / "pairs.txt").write_text("1 1\nA 1 2\nA 1 B 1\n")
    return (["pfe", "eval", "--pairs", str(tmp / "pairs.txt"), "--data", str(tmp), "--model", str(tmp / "pfe")],
            f"{tmp / 'pairs.txt'}:1: the header promises 1 fold(s)", None)


def _crafted_checkpoint(path: Path, skeleton: str) -> Path:
    path.write_bytes(safetensors.torch.save({"s.G.0": torch.zeros(2)}, metadata={"facelab": skeleton}))
    return path


@case
def checkpoint_naming_a_missing_tensor(tmp):
    skeleton = json.dumps({"__dict__": [["format", "facelab-stargan-1"], ["G", {"__tensor__": "s.nowhere"}]]})
    path = _crafted_checkpoint(tmp / "stargan.safetensors", skeleton)
    return (["stargan", "export", "--checkpoint", str(path), "-o", str(tmp / "g.onnx")],
            f"checkpoint {path} is corrupt or not a facelab checkpoint", None)


@case
def checkpoint_nested_900_deep(tmp):
    path = _crafted_checkpoint(tmp / "stargan.safetensors", "[" * 900 + "]" * 900)
    return (["stargan", "export", "--checkpoint", str(path), "-o", str(tmp / "g.onnx")],
            f"checkpoint {path} is corrupt or not a facelab checkpoint", None)


def _model_dir(folder: Path, cfg, weights: str) -> Path:
    save_config(cfg, folder / "config.yaml")
    save_checkpoint(folder / weights, {"format": "other", "w": torch.zeros(1)})
    return folder


@case
def train_given_an_xseg_dir(tmp):
    folder = _model_dir(tmp / "xseg", XSegConfig(), "segmenter.safetensors")
    return ["train", "--model-dir", str(folder)], f"{folder} is an XSeg model dir (made by `facelab xseg train`)", None


@case
def train_given_a_pfe_dir(tmp):
    folder = _model_dir(tmp / "pfe", PFEConfig(), "pfe.safetensors")
    return ["train", "--model-dir", str(folder)], f"{folder} is a PFE model dir", None


@case
def train_given_a_stargan_dir(tmp):
    folder = _model_dir(tmp / "stargan", StarGANConfig(), "checkpoints/stargan.safetensors")
    return ["train", "--model-dir", str(folder)], f"{folder} is a StarGAN run folder", None


@case
def enhancer_train_given_an_xseg_dir(tmp):
    folder = _model_dir(tmp / "xseg", XSegConfig(), "segmenter.safetensors")
    return (["enhancer", "train", "--data", str(tmp), "--model-dir", str(folder)],
            f"{folder} is an XSeg model dir (made by `facelab xseg train`)", None)


@case
def xseg_train_given_a_swap_dir(tmp):
    from facelab.swap.config import SwapConfig

    folder = _model_dir(tmp / "swap", SwapConfig(), "model.safetensors")
    return (["xseg", "train", "--faceset", str(tmp), "--model-dir", str(folder)],
            f"{folder} is a face-swap model dir (made by `facelab train`)", None)


@case
def frames_given_a_folder(tmp):
    _frames_folder(tmp)
    return ["frames", str(tmp / "merged"), "-o", str(tmp / "out")], f"{tmp / 'merged'} is a folder, not a video file", None


@case
def editor_on_another_host(tmp, one_face):
    return ["xseg", "edit", str(one_face.parent), "--host", "0.0.0.0", "--no-browser"], "--host 0.0.0.0 is not this machine", None


@case
def export_without_the_export_extra(tmp):
    blocked = tmp / "site"  # onnx and onnxruntime not installed: their import fails as a missing package's does
    for name in ("onnx", "onnxruntime"):
        (blocked / name).mkdir(parents=True)
        (blocked / name / "__init__.py").write_text(f'raise ImportError("No module named {name!r}")\n')
    return ["export", "--model-dir", str(tmp / "model")], "pip install 'facelab[export]'", None


class _RunsCode:
    """A pickled object whose loading would run a shell command (what a malicious .pth file carries)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@case
def weights_file_that_would_run_code(tmp, one_face):
    torch.save({"state_dict": _RunsCode(tmp / "pwned")}, tmp / "s3fd.pth")
    return (["extract", str(one_face), "-o", str(tmp / "out"), "--detector", "s3fd", "--detector-weights",
             str(tmp / "s3fd.pth")], f"{tmp / 's3fd.pth'}: cannot be read", tmp / "out")


# --------------------------------------------------------------------------------------------- the check


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_one_line_and_changes_nothing(name, tmp_path, request):
    fn = CASES[name]
    fixtures = [request.getfixturevalue(arg) for arg in fn.__code__.co_varnames[1 : fn.__code__.co_argcount]]
    args, names, output = fn(tmp_path, *fixtures)
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    dirs_before = {p for p in tmp_path.rglob("*") if p.is_dir()}
    site = tmp_path / "site"
    path = os.pathsep.join([str(site)] * site.is_dir() + [str(REPO / "src")])
    proc = subprocess.run([sys.executable, "-m", "facelab", *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": path}, cwd=tmp_path)
    lines = proc.stderr.splitlines()
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1 and lines[0].startswith("facelab: error: ") and "Traceback" not in proc.stderr, proc.stderr
    assert names in lines[0], lines[0]

    def inside_output(p: Path) -> bool:
        return output is not None and (p == output or output in p.parents)

    after = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    outside = {p for p in set(before) | set(after) if not inside_output(p)}
    assert {p: after.get(p) for p in outside} == {p: before.get(p) for p in outside}
    new_dirs = {p for p in tmp_path.rglob("*") if p.is_dir()} - dirs_before
    assert all(inside_output(p) for p in new_dirs), new_dirs
