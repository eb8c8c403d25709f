"""Provenance: the invisible mark survives what media goes through, unmarked media reads as unmarked, and
C2PA manifests sign, verify and expose tampering (real frames and photos)."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from facelab.cli import main
from facelab.io.video import iter_frames, write_video
from facelab.provenance import signing, watermark
from facelab.provenance.verify import verify

PAYLOAD = 0x5A17C3


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A fresh installation folder, so the tests never touch the user's own key."""
    monkeypatch.setenv("FACELAB_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("FACELAB_SIGNING_CERT", raising=False)
    monkeypatch.delenv("FACELAB_SIGNING_KEY", raising=False)
    signing.identity.cache_clear()
    yield tmp_path / "home"
    signing.identity.cache_clear()


@pytest.fixture(scope="module")
def frames(sample_clips):
    return [f for _, (i, f) in zip(range(24), iter_frames(sample_clips[1]))]


def test_mark_is_invisible_and_survives_jpeg_resize_crop_and_colour(frames):
    frame = frames[0]
    marked = watermark.embed(frame, PAYLOAD)
    assert cv2.PSNR(frame, marked) > 40
    h, w = marked.shape[:2]
    changed = {
        "untouched": marked,
        "jpeg75": cv2.imdecode(cv2.imencode(".jpg", marked, [cv2.IMWRITE_JPEG_QUALITY, 75])[1], cv2.IMREAD_COLOR),
        "half": cv2.resize(marked, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA),
        "crop": marked[int(0.05 * h) + 3:int(0.95 * h), int(0.05 * w) + 7:int(0.95 * w)],
        "colour": np.clip(1.1 * 255 * (marked / 255.0) ** 0.9 + 8, 0, 255).astype(np.uint8),
    }
    for name, image in changed.items():
        reading = watermark.read([image])
        assert reading.found and reading.payload == PAYLOAD, (name, reading)
    assert not watermark.read([frame]).found  # the same frame unmarked


def test_unmarked_real_photos_read_as_unmarked(fetched_photos, sample_photos):
    images = [cv2.imread(str(p)) for p in sorted(fetched_photos.glob("*.[jp][pn]g"))] + list(sample_photos.values())
    readings = [watermark.read([im]) for im in images if im is not None]
    assert len(readings) >= 5 and not any(r.found for r in readings), max(r.confidence for r in readings)


def test_mark_survives_h264_video(frames, tmp_path):
    out = tmp_path / "marked.mp4"
    write_video(out, (watermark.embed(f, PAYLOAD) for f in frames), 25, crf=28)
    reading = watermark.read([f for _, f in iter_frames(out)])
    assert reading.found and reading.payload == PAYLOAD, reading
    plain = tmp_path / "plain.mp4"
    write_video(plain, iter(frames), 25, crf=28)
    assert not watermark.read([f for _, f in iter_frames(plain)]).found


def test_the_mark_adds_the_rounded_weighted_pattern_with_saturation(frames):
    """embed() is clip(image + rint(pattern * detail weight)) in every channel, bright and dark pixels
    included (it works in saturating uint8 steps, so the sum must be checked against the plain formula)."""
    frame = frames[0].copy()
    frame[:40] = 255  # saturating up
    frame[40:80] = 0  # and down
    h, w = frame.shape[:2]
    grey = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
    delta = np.rint(watermark._full_pattern(h, w, PAYLOAD) * watermark._weights(grey)).astype(np.int64)
    expected = np.clip(frame.astype(np.int64) + delta[..., None], 0, 255).astype(np.uint8)
    assert np.abs(delta).max() > 2 and np.array_equal(watermark.embed(frame, PAYLOAD), expected)
    assert np.array_equal(watermark.embed(grey, PAYLOAD), np.clip(grey + delta, 0, 255).astype(np.uint8))


@pytest.mark.parametrize("suffix", [".jpg", ".png", ".mp4"])
def test_signed_outputs_verify_and_tampering_shows(home, frames, tmp_path, suffix):
    signer = signing.Signer(signing.Credentials("face swap", "ab" * 32))
    path = tmp_path / f"out{suffix}"
    marked = [watermark.embed(f, signer.mark_id) for f in frames[:12]]
    if suffix == ".mp4":
        write_video(path, iter(marked), 25)
    else:
        cv2.imwrite(str(path), marked[0])
    if suffix == ".png":  # as merge signs its frames: in memory, before the one write
        path.write_bytes(signer.signed(path.read_bytes(), path))
    else:
        signer.sign(path)
    report = verify(path)
    assert report.manifest and report.by_facelab and report.valid and report.trusted, report
    assert not report.changed_after_signing and report.action == "face swap" and report.model_sha256 == "ab" * 32
    assert report.watermark and report.watermark_id == signer.mark_id
    assert (home / "provenance" / "signer.key").stat().st_mode & 0o077 == 0  # the key is private to its user

    tampered = tmp_path / f"tampered{suffix}"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x5A
    tampered.write_bytes(bytes(data))
    report = verify(tampered)
    assert report.manifest and not report.valid and report.changed_after_signing, report


def test_stripped_metadata_leaves_the_mark_and_others_certificates_are_untrusted(home, frames, tmp_path, monkeypatch):
    signer = signing.Signer(signing.Credentials("attribute edit"))
    path = tmp_path / "edit.jpg"
    cv2.imwrite(str(path), watermark.embed(frames[0], signer.mark_id))
    signer.sign(path)
    stripped = tmp_path / "stripped.png"
    cv2.imwrite(str(stripped), cv2.imread(str(path)))  # re-saved by another program: metadata gone
    report = verify(stripped)
    assert not report.manifest and report.watermark and report.watermark_id == signer.mark_id

    # a user's own certificate (here: another installation's): signs fine, and this one does not trust it
    other = tmp_path / "other"
    signing._create(other)
    monkeypatch.setenv("FACELAB_SIGNING_CERT", str(other / signing.CERT_NAME))
    monkeypatch.setenv("FACELAB_SIGNING_KEY", str(other / signing.KEY_NAME))
    signing.identity.cache_clear()
    theirs = tmp_path / "theirs.jpg"
    cv2.imwrite(str(theirs), frames[1])
    signing.Signer(signing.Credentials("face swap")).sign(theirs)
    monkeypatch.delenv("FACELAB_SIGNING_CERT")
    monkeypatch.delenv("FACELAB_SIGNING_KEY")
    signing.identity.cache_clear()
    report = verify(theirs)
    assert report.valid and not report.trusted and not report.changed_after_signing, report


def test_verify_command_prints_a_line_per_file_and_json(home, frames, tmp_path, capsys):
    signer = signing.Signer(signing.Credentials("face swap"))
    marked, plain = tmp_path / "marked.jpg", tmp_path / "plain.jpg"
    cv2.imwrite(str(marked), watermark.embed(frames[0], signer.mark_id))
    signer.sign(marked)
    cv2.imwrite(str(plain), frames[0])
    assert main(["verify", str(marked), str(plain), "--json", str(tmp_path / "r.json")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "facelab manifest, valid, trusted" in lines[0] and "watermark id" in lines[0]
    assert "no manifest; no watermark" in lines[1]
    assert [r["watermark"] for r in json.loads((tmp_path / "r.json").read_text())] == [True, False]
    assert main(["verify", str(tmp_path / "missing.jpg")]) == 2
    assert "missing.jpg not found" in capsys.readouterr().err
