"""Video in and out through PyAV (FFmpeg's libraries): probing, frame decoding and H.264 encoding with audio."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterable, Iterator

import av
import numpy as np

from facelab.core.errors import FacelabError

log = logging.getLogger("facelab")
VIDEO_EXTENSIONS = (".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv")


def is_video_file(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_EXTENSIONS


@dataclass(frozen=True)
class VideoInfo:
    path: Path
    width: int
    height: int
    fps: Fraction
    frame_count: int
    duration: float
    has_audio: bool


def _open(path: Path):
    if path.is_dir():
        raise FacelabError(f"{path} is a folder, not a video file; give a video (a folder of frames can go "
                           "straight to `facelab extract`)")
    if not path.is_file():
        raise FacelabError(f"video {path} not found; check the path")
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, UnicodeDecodeError) as exc:
        raise FacelabError(f"{path} is not a readable video ({type(exc).__name__}); the file is corrupt, truncated or not a video") from None
    if not container.streams.video:
        container.close()
        raise FacelabError(f"{path} has no video stream; give a video file")
    return container


def _promised(container, stream) -> tuple[Fraction, float, int]:
    """Frame rate, duration and frame count the container states (the count estimated from the duration
    where the container has none)."""
    fps = stream.average_rate or stream.guessed_rate or Fraction(25)
    duration = float(stream.duration * stream.time_base) if stream.duration else (
        container.duration / av.time_base if container.duration else 0.0)
    return Fraction(fps), duration, stream.frames or int(round(duration * float(fps)))


def probe(path: str | Path) -> VideoInfo:
    path = Path(path)
    with _open(path) as container:
        stream = container.streams.video[0]
        fps, duration, frames = _promised(container, stream)
        return VideoInfo(path, stream.codec_context.width, stream.codec_context.height, fps,
                         frames, duration, bool(container.streams.audio))


def _warn_if_short(path: Path, promised: int, decoded: int) -> None:
    """A file cut short (an interrupted copy or download) often still opens and decodes its first part."""
    if decoded < promised - max(1, promised // 100):
        log.warning(f"warning: {path} promises {promised} frames but only {decoded} could be decoded; the video is "
                    "truncated or damaged, the rest of it is missing (re-copy or re-download it)")


def iter_frames(path: str | Path, fps: float | None = None) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(frame_index, bgr_frame)``; with ``fps`` only the frames that keep that rate.

    ``frame_index`` counts every decoded frame of the source, so it addresses the source frame even
    when frames are skipped.
    """
    path = Path(path)
    with _open(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        src_fps, _, promised = _promised(container, stream)
        src_fps = float(src_fps)
        step = src_fps / fps if fps and fps < src_fps else 1.0
        next_keep = 0.0
        index = -1
        try:
            for frame in container.decode(stream):
                index += 1
                if index + 1e-6 < next_keep:
                    continue
                next_keep += step
                yield index, frame.to_ndarray(format="bgr24")
        except av.error.FFmpegError as exc:
            raise FacelabError(f"{path}: decoding failed after frame {index} ({type(exc).__name__}); the video is corrupt or truncated") from None
    if index < 0:
        raise FacelabError(f"{path} holds no decodable frames; the video is corrupt or empty")
    _warn_if_short(path, promised, index + 1)


def write_video(path: str | Path, frames: Iterable[np.ndarray], fps: Fraction | float, crf: int = 18,
                audio: np.ndarray | None = None, audio_rate: int = 44100, audio_from: str | Path | None = None) -> int:
    """Encode BGR frames as H.264 (yuv420p) at ``fps``; returns the number of frames written.

    Audio is either ``audio`` (float samples, shape (channels, n) in -1..1, encoded as AAC) or copied
    packet-for-packet from the first audio stream of ``audio_from`` (no re-encoding, no quality loss).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fps = Fraction(fps).limit_denominator(100000)
    written = 0
    src = av.open(str(audio_from)) if audio_from is not None else None
    try:
        src_audio = src.streams.audio[0] if src is not None and src.streams.audio else None
        with av.open(str(path), "w") as out:
            vstream = out.add_stream("libx264", rate=fps)
            vstream.pix_fmt = "yuv420p"
            vstream.options = {"crf": str(crf), "preset": "veryfast"}
            astream = None
            if src_audio is not None:
                astream = out.add_stream_from_template(src_audio)
            elif audio is not None:
                astream = out.add_stream("aac", rate=audio_rate)
                astream.layout = "mono" if audio.shape[0] == 1 else "stereo"
            for img in frames:
                if written == 0:
                    vstream.width, vstream.height = img.shape[1] // 2 * 2, img.shape[0] // 2 * 2
                img = img[: vstream.height, : vstream.width]
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="bgr24")
                for packet in vstream.encode(frame):
                    out.mux(packet)
                written += 1
            for packet in vstream.encode():
                out.mux(packet)
            if src_audio is not None:
                for packet in src.demux(src_audio):
                    if packet.dts is None:
                        continue
                    packet.stream = astream
                    out.mux(packet)
            elif audio is not None:
                _encode_audio(out, astream, audio, audio_rate)
    finally:
        if src is not None:
            src.close()
    if written == 0:
        path.unlink(missing_ok=True)
        raise FacelabError(f"no frames to write to {path}")
    return written


def _encode_audio(out, stream, audio: np.ndarray, rate: int) -> None:
    samples = np.clip(audio, -1, 1).astype(np.float32)
    chunk = 1024
    for start in range(0, samples.shape[1], chunk):
        part = np.ascontiguousarray(samples[:, start : start + chunk])
        frame = av.AudioFrame.from_ndarray(part, format="fltp", layout=stream.layout.name)
        frame.sample_rate = rate
        frame.pts = start
        for packet in stream.encode(frame):
            out.mux(packet)
    for packet in stream.encode():
        out.mux(packet)
