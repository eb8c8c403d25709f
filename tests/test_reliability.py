"""What facelab promises when things go wrong (docs/reliability.md): a save never leaves a moment without a
complete checkpoint and a run resumes from the newest complete one; a killed write's temporary files are
never read as data and are removed by the next run; a killed sort is finished by the next one; a crafted
pack writes nothing outside its folder; unpack keeps edited faces; photos are read upright; a cut video is
reported; a full or read-only disk is one line naming the file."""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from facelab.core.checkpoint import load_checkpoint, resume_checkpoint, save_checkpoint
from facelab.core.errors import FacelabError
from facelab.core.files import previous_path
from facelab.extract.config import ExtractConfig
from facelab.extract.pipeline import extract
from facelab.faceset import ops
from facelab.face.metadata import read_meta
from facelab.faceset.store import PACK_NAME, Faceset, _write_pack, pack, unpack
from facelab.io.images import decode_image, read_image

from conftest import REPO

ENV = {**os.environ, "PYTHONPATH": str(REPO / "src")}


def run_cli(*args: str, env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "facelab", *args], capture_output=True, text=True,
                          timeout=timeout, env=env or ENV)


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def faces(sample_clips, tmp_path_factory) -> Path:
    """Eight to twenty real aligned faces (64 px JPEG) from the first sample clip."""
    folder = tmp_path_factory.mktemp("faces") / "aligned"
    extract(sample_clips[0], folder, ExtractConfig(size=64, fps=4, workers=1))
    (folder / ".extract_state.json").unlink()
    assert len(Faceset.open(folder)) >= 6
    return folder


@pytest.fixture
def faceset(faces, tmp_path) -> Path:
    folder = tmp_path / "aligned"
    shutil.copytree(faces, folder)
    return folder


# ------------------------------------------------------------------------------------------- checkpoints


def _state(iteration: int) -> dict:
    return {"iteration": iteration, "w": torch.full((64, 64), float(iteration))}


def test_a_save_never_leaves_a_moment_without_the_checkpoint(tmp_path, monkeypatch):
    """Every rename and link of a save is followed by a check that the checkpoint is there and complete."""
    path = tmp_path / "model.safetensors"
    save_checkpoint(path, _state(1))
    seen = []

    def watched(fn):
        def call(*args, **kwargs):
            out = fn(*args, **kwargs)
            seen.append(load_checkpoint(path)["iteration"])  # raises "not found" in a gap
            return out
        return call

    for name in ("replace", "rename", "link"):
        monkeypatch.setattr(os, name, watched(getattr(os, name)))
    save_checkpoint(path, _state(2))
    save_checkpoint(path, _state(3))
    assert seen and seen[-1] == 3
    assert load_checkpoint(previous_path(path))["iteration"] == 2


@pytest.mark.parametrize("kill_at", range(8))
def test_a_save_killed_at_any_step_resumes_from_a_complete_save(tmp_path, kill_at):
    """A child process saves iteration 3 over 1 and 2 and dies (os._exit, no clean-up) before its
    ``kill_at``-th file operation. Whatever it left, the run resumes from iteration 2 or 3, never from
    nothing, and the temporary files are gone afterwards."""
    path = tmp_path / "model.safetensors"
    save_checkpoint(path, _state(1))
    save_checkpoint(path, _state(2))
    pid = os.fork()
    if pid == 0:  # the child: count write, fsync, link and rename calls, die before number kill_at
        calls = [0]

        def dying(fn):
            def call(*args, **kwargs):
                if calls[0] == kill_at:
                    os._exit(9)
                calls[0] += 1
                return fn(*args, **kwargs)
            return call

        for name in ("replace", "rename", "link", "fsync"):
            setattr(os, name, dying(getattr(os, name)))
        Path.write_bytes = dying(Path.write_bytes)
        save_checkpoint(path, _state(3))
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    finished = os.waitstatus_to_exitcode(status) == 0
    assert resume_checkpoint(path) == path
    assert load_checkpoint(path)["iteration"] in ((3,) if finished else (2, 3))
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_resume_picks_the_newest_complete_save(tmp_path):
    path = tmp_path / "model.safetensors"
    assert resume_checkpoint(path) is None  # a new model dir
    save_checkpoint(path, _state(1))
    save_checkpoint(path, _state(2))
    path.unlink()  # only the previous save is left
    assert resume_checkpoint(path) == path and load_checkpoint(path)["iteration"] == 1
    save_checkpoint(path, _state(2))
    # the kill between the two renames of a save: no checkpoint, the previous one and a complete temporary one
    path.rename(tmp_path / ".model.safetensors.ab12cd34.tmp.safetensors")
    (tmp_path / ".model.safetensors.zz99zz99.tmp.safetensors").write_bytes(b"half a file")  # killed mid-write
    os.utime(tmp_path / ".model.safetensors.zz99zz99.tmp.safetensors", (4e9, 4e9))  # and the newest
    assert resume_checkpoint(path) == path and load_checkpoint(path)["iteration"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.prev.safetensors", "model.safetensors"]


# ------------------------------------------------------------------------------------------- packs


def _crafted_pack(path: Path, names: list[str]) -> None:
    _write_pack(path, names, [b"x" * 10] * len(names))


@pytest.mark.parametrize("name", ["../../x.txt", "../escaped.jpg", "{tmp}/absolute.jpg", "sub/face.jpg",
                                  "..", ".hidden.jpg", "face.sh"])
def test_pack_members_must_be_plain_image_names(tmp_path, name):
    folder = tmp_path / "deep" / "faces"
    folder.mkdir(parents=True)
    _crafted_pack(folder / PACK_NAME, ["00001_0.jpg", name.format(tmp=tmp_path)])  # absolute: still in tmp_path
    before = snapshot(tmp_path)
    with pytest.raises(FacelabError, match="not a plain image file name"):
        unpack(folder)
    assert snapshot(tmp_path) == before  # not even the harmless first member was written


def test_damaged_packs_are_one_line(tmp_path):
    pak = tmp_path / PACK_NAME
    for data in (b"FLPAK001", b"FLPAK001" + struct.pack("<Q", 2) + b"{}",
                 b"FLPAK001" + struct.pack("<Q", 1 << 40), b"FLPAK001" + struct.pack("<Q", 9) + b'[["a",1]]'):
        pak.write_bytes(data)
        with pytest.raises(FacelabError, match="is damaged"):
            Faceset.open(tmp_path)


def _member(pak: Path, name: str) -> bytes:
    from facelab.faceset.store import _read_pack

    names, blobs = _read_pack(pak)
    return blobs[names.index(name)]


def test_unpack_keeps_a_loose_face_edited_since_packing(faceset):
    names = sorted(p.name for p in faceset.iterdir())
    original = (faceset / names[0]).read_bytes()
    pack(faceset)
    edited = original + b"edited"  # bytes after the JPEG's end: the same pixels, another file
    (faceset / names[0]).write_bytes(edited)
    (faceset / names[1]).write_bytes(_member(faceset / PACK_NAME, names[1]))  # as an interrupted unpack left it
    n, aside = unpack(faceset)
    assert n == len(names) and sorted(p.name for p in faceset.iterdir()) == names
    assert (faceset / names[0]).read_bytes() == edited  # the user's edit stays
    assert aside == faceset.with_name("aligned_pak_copies") and (aside / names[0]).read_bytes() == original
    assert [p.name for p in aside.iterdir()] == [names[0]]  # an identical loose face is no conflict


def test_a_folder_with_a_pack_and_loose_faces_is_refused_until_unpacked(faceset):
    names = sorted(p.name for p in faceset.iterdir())
    loose = faceset.parent / "later"
    loose.mkdir()
    for name in names[:3]:  # faces extracted into the folder after it was packed
        shutil.move(faceset / name, loose / name)
    pack(faceset)
    for name in names[:3]:
        shutil.move(loose / name, faceset / name)
    for call in (Faceset.open, pack):
        with pytest.raises(FacelabError, match=f"holds both {PACK_NAME} and 3 loose faces.*faceset unpack"):
            call(faceset)
    assert unpack(faceset) == (len(names) - 3, None)  # the faces it held; the loose ones stay
    assert Faceset.open(faceset).names == names


# ------------------------------------------------------------------------------------------- temporary files


def test_temporary_files_are_never_faces_and_the_next_run_removes_them(faceset, sample_clips):
    names = sorted(p.name for p in faceset.iterdir())
    orphan = faceset / f".{names[3]}.k1ll3d00.tmp.jpg"  # a complete face whose write was killed before the rename
    shutil.copy(faceset / names[3], orphan)
    (faceset / "._00001_0.jpg").write_bytes(b"macOS resource fork")
    assert Faceset.open(faceset).names == names
    extract(sample_clips[0], faceset, ExtractConfig(size=64, fps=0.2, workers=1))
    assert not orphan.exists() and (faceset / "._00001_0.jpg").exists()  # only facelab's own leftovers go


# ------------------------------------------------------------------------------------------- sort


@pytest.mark.parametrize("phase, after", [("hide", 3), ("name", 0), ("name", 4)])
def test_a_killed_sort_is_finished_by_the_next_one(faceset, monkeypatch, phase, after):
    """The sort dies after ``after`` renames of a phase (hide: faces to temporary names, name: to the new
    names); the folder is refused until the next sort, which finishes the renames, then sorts."""
    names = sorted(p.name for p in faceset.iterdir())
    real_rename, count = Path.rename, {"hide": 0, "name": 0}

    def rename(self, target):
        kind = "hide" if Path(target).name.startswith(".sorting") else "name"
        if kind == phase and count[kind] == after:
            raise KeyboardInterrupt  # where the process died
        count[kind] += 1
        return real_rename(self, target)

    monkeypatch.setattr(Path, "rename", rename)
    with pytest.raises(KeyboardInterrupt):
        ops.sort_faceset(faceset, "yaw")
    monkeypatch.setattr(Path, "rename", real_rename)
    with pytest.raises(FacelabError, match="interrupted `facelab faceset sort`"):
        Faceset.open(faceset)
    ops.sort_faceset(faceset, "source")
    sorted_names = sorted(p.name for p in faceset.iterdir())
    assert sorted(n.split("__", 1)[1] for n in sorted_names) == names  # no face lost or left hidden
    order = [read_meta(faceset / n).source_frame for n in sorted_names]
    assert order == sorted(order)


# ------------------------------------------------------------------------------------------- images and videos


def _with_exif_orientation(jpeg: bytes, orientation: int) -> bytes:
    """``jpeg`` with an APP1 EXIF segment whose only tag is Orientation, as cameras and phones write it."""
    ifd = struct.pack(">HHHIHH", 1, 0x0112, 3, 1, orientation, 0) + struct.pack(">I", 0)
    payload = b"Exif\0\0" + b"MM" + struct.pack(">HI", 42, 8) + ifd
    return jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload + jpeg[2:]


def test_exif_orientation_is_applied_on_every_read(sample_photos, tmp_path):
    """All eight orientations give what OpenCV's own EXIF-aware decoder gives, and an extraction finds the
    face in a portrait stored sideways (orientation 6), as phones store them."""
    upright = sample_photos["hopper"]
    jpeg = cv2.imencode(".jpg", upright)[1].tobytes()
    for orientation in range(1, 9):
        data = _with_exif_orientation(jpeg, orientation)
        reference = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        assert np.array_equal(decode_image(data), reference), orientation
    sideways = cv2.imencode(".jpg", cv2.rotate(upright, cv2.ROTATE_90_COUNTERCLOCKWISE))[1].tobytes()
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "phone.jpg").write_bytes(_with_exif_orientation(sideways, 6))
    assert read_image(tmp_path / "photos" / "phone.jpg").shape == upright.shape
    stats = extract(tmp_path / "photos", tmp_path / "out", ExtractConfig(workers=1))
    assert stats.faces == 1 and not stats.no_face


def test_a_truncated_video_is_reported(tmp_path):
    """An MP4 with its index at the start (as streaming files have it) cut at 30 % and 70 % still decodes
    its first part; `frames` says how many frames the file promised and how many it got."""
    import av

    full = tmp_path / "full.mp4"
    rng = np.random.default_rng(0)
    with av.open(str(full), "w", options={"movflags": "faststart"}) as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width = stream.height = 128
        stream.pix_fmt = "yuv420p"
        for _ in range(60):
            frame = av.VideoFrame.from_ndarray(rng.integers(0, 255, (128, 128, 3), np.uint8), format="bgr24")
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    data = full.read_bytes()
    assert data[4:8] == b"ftyp" and b"moov" in data[:4096]
    for cut in (0.3, 0.7):
        video = tmp_path / f"cut{cut}.mp4"
        video.write_bytes(data[: int(len(data) * cut)])
        proc = run_cli("frames", str(video), "-o", str(tmp_path / f"frames{cut}"))
        got = len(list((tmp_path / f"frames{cut}").iterdir()))
        assert proc.returncode == 0 and 0 < got < 60 and f"wrote {got} frames" in proc.stdout
        assert f"{video} promises 60 frames but only {got} could be decoded" in proc.stderr
    proc = run_cli("frames", str(full), "-o", str(tmp_path / "all"))
    assert proc.returncode == 0 and "promises" not in proc.stderr and "wrote 60 frames" in proc.stdout


def test_a_damaged_feature_pool_cache_is_rebuilt(tmp_path, caplog):
    """`pfe train` caches the backbone features of its data in pool.npz; a damaged cache (a copy cut short,
    a disk error) is computed again, giving the same pool, instead of stopping the run with a traceback."""
    from facelab.cli import main
    from facelab.samples.identities import make_identity_samples

    make_identity_samples(tmp_path / "data", per_identity=4)
    model_dir, pool = tmp_path / "pfe", tmp_path / "pfe" / "pool.npz"
    args = ["pfe", "train", "--data", str(tmp_path / "data"), "--model-dir", str(model_dir), "--classes-per-batch",
            "2", "--samples-per-class", "2", "--device", "cpu", "--target-iter"]
    assert main([*args, "1"]) == 0
    with np.load(pool) as z:
        features = z["features"]
    for steps, damage in ((2, lambda d: d[: len(d) // 2]), (3, lambda d: b"PK\x03\x04" + bytes(200))):
        pool.write_bytes(damage(pool.read_bytes()))
        caplog.clear()
        assert main([*args, str(steps)]) == 0
        assert f"{pool} is damaged" in caplog.text
        with np.load(pool) as z:
            assert np.array_equal(z["features"], features)


# ------------------------------------------------------------------------------------------- full and read-only disks

UNSHARE = shutil.which("unshare")


def _namespaces_work() -> bool:
    if UNSHARE is None:
        return False
    probe = subprocess.run([UNSHARE, "-rm", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt"], capture_output=True)
    return probe.returncode == 0


needs_tmpfs = pytest.mark.skipif(not _namespaces_work(), reason="needs unshare with user and mount namespaces to "
                                                                "mount a small or read-only tmpfs")


def _on_small_disk(tmp_path: Path, setup: str, command: list[str], fault: str) -> subprocess.CompletedProcess:
    """Run ``facelab COMMAND`` with ``tmp_path/disk`` a 256 KiB tmpfs (private mount namespace), after the
    shell ``setup`` filled it; ``fault`` is "full" (the rest of the disk filled up) or "ro" (remounted
    read-only)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    fill = {"full": f"cat /dev/zero > {disk}/filler 2>/dev/null; true",
            "ro": f"mount -o remount,ro {disk}"}[fault]
    script = (f"mount -t tmpfs -o size=256k tmpfs {disk} && {setup} && {fill} && "
              + " ".join(f"'{a}'" for a in [sys.executable, "-m", "facelab", *command]))
    return subprocess.run([UNSHARE, "-rm", "sh", "-c", script], capture_output=True, text=True, timeout=300, env=ENV)


@needs_tmpfs
@pytest.mark.parametrize("fault", ["full", "ro"])
@pytest.mark.parametrize("case", ["frames", "extract", "sort", "pack", "import-masks", "train"])
def test_a_full_or_read_only_disk_is_one_line(case, fault, faces, sample_clips, tmp_path):
    disk = tmp_path / "disk"
    copy = f"cp -r {faces} {disk}/faces"
    masks = tmp_path / "masks"
    masks.mkdir()
    for name in sorted(p.name for p in faces.iterdir())[:2]:
        cv2.imwrite(str(masks / (Path(name).stem + ".png")), np.full((64, 64), 255, np.uint8))
    setup, command = {
        "frames": ("true", ["frames", str(sample_clips[0]), "-o", f"{disk}/frames"]),
        "extract": ("true", ["extract", str(sample_clips[0]), "-o", f"{disk}/aligned", "--workers", "1", "--fps", "5"]),
        "sort": (copy, ["faceset", "sort", f"{disk}/faces", "--by", "yaw"]),
        "pack": (copy, ["faceset", "pack", f"{disk}/faces"]),
        "import-masks": (copy, ["xseg", "import-masks", f"{disk}/faces", "--masks", str(masks)]),
        "train": ("true", ["train", "--src", str(faces), "--dst", str(faces), "--model-dir", f"{disk}/model",
                           "--resolution", "64", "--archi", "df", "--ae-dims", "16", "--e-dims", "4",
                           "--d-dims", "4", "--d-mask-dims", "2", "--batch-size", "2", "--target-iter", "1",
                           "--workers", "0", "--eval-faces", "0"]),
    }[case]
    before = snapshot(faces)
    proc = _on_small_disk(tmp_path, setup, command, fault)
    reason = {"full": "No space left on device", "ro": "Read-only file system"}[fault]
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"facelab: error: cannot write {disk}/") and reason in lines[0], lines[0]
    assert "Traceback" not in proc.stderr and snapshot(faces) == before
