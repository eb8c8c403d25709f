"""``facelab verify``'s checks: is a file's facelab manifest there and valid, was the file changed after
signing, and does its pixels carry the watermark?"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from facelab.core.errors import FacelabError
from facelab.io.images import is_image_file, read_image
from facelab.io.video import is_video_file, iter_frames, probe
from facelab.provenance.signing import identity
from facelab.provenance.watermark import MarkReading, read

VIDEO_FRAMES = 32  # frames read for the watermark, spread over the video (a 256 px video needs them all)
# validation codes that mean the bytes no longer match what was signed
_CHANGED = ("assertion.dataHash.mismatch", "assertion.bmffHash.mismatch", "assertion.boxesHash.mismatch",
            "assertion.hashedURI.mismatch", "claimSignature.mismatch")


@dataclass
class Report:
    file: str
    manifest: bool  # a C2PA manifest is present
    by_facelab: bool  # ... and facelab made it
    valid: bool  # its signature and hashes verify
    trusted: bool  # signed by a certificate this installation trusts (its own, or a trust list's)
    changed_after_signing: bool
    action: str | None
    model_sha256: str | None
    signed_at: str | None
    watermark: bool
    watermark_confidence: float
    watermark_id: int | None
    problems: list[str]

    def line(self) -> str:
        cred = ("no manifest" if not self.manifest else
                f"{'facelab' if self.by_facelab else 'other'} manifest, "
                + ("valid" if self.valid else "INVALID") + (", trusted" if self.trusted else ", untrusted")
                + (", CHANGED after signing" if self.changed_after_signing else ""))
        ident = f" id {self.watermark_id:06x}" if self.watermark_id is not None else " (id unreadable)"
        mark = (f"watermark{ident}, confidence {self.watermark_confidence:.1f}" if self.watermark
                else f"no watermark (confidence {self.watermark_confidence:.1f})")
        what = f" [{self.action}]" if self.action else ""
        return f"{self.file}: {cred}; {mark}{what}"

    def as_dict(self) -> dict:
        return asdict(self)


def _frames(path: Path) -> list[np.ndarray]:
    if is_image_file(path):
        return [read_image(path)]
    total = max(1, probe(path).frame_count)
    wanted = set(np.linspace(0, total - 1, min(VIDEO_FRAMES, total)).round().astype(int).tolist())
    return [frame for index, frame in iter_frames(path) if index in wanted]


def _manifest(path: Path) -> dict | None:
    import c2pa

    ident = identity()
    settings = {"trust": {"trust_anchors": ident.anchor.decode()}} if ident.anchor else {}
    try:
        reader = c2pa.Reader(str(path), context=c2pa.Context(settings=c2pa.Settings.from_dict(settings)))
    except c2pa.C2paError as exc:
        if "ManifestNotFound" in type(exc).__name__ or "not found" in str(exc).lower():
            return None
        return {"error": str(exc)}
    return json.loads(reader.json())


def verify(path: str | Path) -> Report:
    path = Path(path)
    if not path.is_file():
        raise FacelabError(f"{path} not found; give images or videos to verify")
    if not (is_image_file(path) or is_video_file(path)):
        raise FacelabError(f"{path} is neither an image nor a video")
    store = _manifest(path)
    problems = []
    try:
        mark = read(_frames(path))
    except FacelabError as exc:  # damaged pixels: the manifest check still says what it can
        mark, problems = MarkReading(False, 0.0, None, 1.0), [f"pixels unreadable: {exc}"]
    report = Report(str(path), store is not None, False, False, False, False, None, None, None,
                    mark.found, round(mark.confidence, 2), mark.payload, problems)
    if store is None:
        return report
    if "error" in store:
        report.problems.append(store["error"])
        return report
    active = store.get("manifests", {}).get(store.get("active_manifest", ""), {})
    generators = [g.get("name") for g in active.get("claim_generator_info", [])]
    report.by_facelab = "facelab" in generators
    for assertion in active.get("assertions", []):
        if assertion.get("label", "").startswith("c2pa.actions"):
            for action in assertion.get("data", {}).get("actions", []):
                params = action.get("parameters", {})
                report.action = params.get("facelab.action", report.action)
                report.model_sha256 = params.get("facelab.model_sha256", report.model_sha256)
                report.signed_at = action.get("when", report.signed_at)
    statuses = [s.get("code", "") for s in store.get("validation_status", []) or []]
    failures = [code for code in statuses if code != "signingCredential.untrusted"]
    report.problems += failures
    report.changed_after_signing = any(code in _CHANGED for code in statuses)
    report.valid = not failures
    report.trusted = report.valid and store.get("validation_state") == "Trusted"
    return report
