"""``facelab swap``: DeepFaceLab's whole workflow in one command, in a workspace folder it can resume.

frames of DST -> extract faces of SRC and DST (the model's face type) -> train for ``iterations`` ->
merge -> video with DST's frame rate and audio. Every step resumes, so running the same command again
after an interruption (or with more iterations) continues instead of starting over.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

from facelab.core.config import check_fixed_unchanged, check_range
from facelab.core.errors import FacelabError
from facelab.core.files import atomic_write_text
from facelab.extract.pipeline import faceset_of
from facelab.io.frames import extract_frames
from facelab.io.images import is_image_file, list_images
from facelab.io.video import is_video_file, probe
from facelab.merge.config import MergeConfig
from facelab.merge.merger import MergeStats, run_merge
from facelab.merge.video import assemble_video
from facelab.swap.config import SwapConfig, swap_default
from facelab.provenance.stamp import Stamp
from facelab.swap.model_dir import credentials, load_saved_config

log = logging.getLogger(__name__)


def training_config(model_dir: Path, iterations: int | None, train_cfg: SwapConfig | None) -> SwapConfig:
    """What ``facelab train`` would use here: for a new model ``train_cfg`` (default: the config
    :func:`~facelab.swap.config.swap_default` picks for this machine's device); for an existing one its
    saved config, or ``train_cfg`` where given (whose network options must match the saved ones); trained
    to ``iterations``, else to the config's ``target_iter``."""
    saved = load_saved_config(model_dir)
    if saved is not None and train_cfg is not None:
        check_fixed_unchanged(saved, train_cfg, str(model_dir))
    cfg = train_cfg or saved or swap_default()
    target = iterations or cfg.target_iter or swap_default(cfg.device).target_iter
    check_range(target, "iterations", "swap", low=1)
    return dataclasses.replace(cfg, target_iter=target)


def workspace_of(output: str | Path, workspace: str | Path | None) -> Path:
    """The workspace folder: as given, else ``OUTPUT_workspace`` beside the output video."""
    output = Path(output)
    return Path(workspace) if workspace else output.with_name(f"{output.stem}_workspace")


def check_inputs(src: str | Path, dst_video: str | Path, dst_person: str | Path | None = None) -> None:
    """Refuse a missing or wrong input in one line before any frame is extracted or any model loaded."""
    src, dst_video = Path(src), Path(dst_video)
    if not (dst_video.is_file() and is_video_file(dst_video)):
        raise FacelabError(f"{dst_video} is not a video file; facelab swap needs the dst video (the one to change)")
    for path, what in ((src, "src (the face to put in)"), (dst_person, "--dst-person")):
        if path is None:
            continue
        path = Path(path)
        if path.is_dir() and not list_images(path):
            raise FacelabError(f"{path} holds no images; give {what} as a video, photos or a faceset folder")
        if not path.is_dir() and not (path.is_file() and (is_video_file(path) or is_image_file(path))):
            raise FacelabError(f"{path} not found or not a video, an image or a folder of images; check the "
                               f"{what} path")


def score_identity(src_faces: Path, dst_faces: Path, video: Path, every: int) -> dict:
    """Did the swap carry the source identity? Every ``every``-th frame of ``video`` judged src person, dst
    person or neither against the src and dst facesets, by the calibrated same-person rule with the offline
    face embedding (see :mod:`facelab.qa.identity`)."""
    from facelab.qa.identity import faces_of, score_video
    from facelab.pfe.model import PFEModel

    model = PFEModel.deterministic(device="cpu")
    people = [faces_of(model, faces, every=max(1, len(list_images(faces)) // 30)) for faces in (src_faces, dst_faces)]
    return score_video(video, model, *people, every=every)[1]


def swap(src: str | Path, dst_video: str | Path, output: str | Path, workspace: str | Path | None = None,
         iterations: int | None = None, merge_cfg: MergeConfig | None = None,
         train_cfg: SwapConfig | None = None, identity_every: int = 0,
         dst_person: str | Path | None = None) -> MergeStats:
    """Run the whole workflow; returns the merge step's statistics. ``train_cfg`` sets every training
    option (see :func:`training_config`). With ``identity_every`` the result is also scored for identity
    (every N-th frame) into ``WORKSPACE/identity.json``. With ``dst_person`` (photos, a video or a faceset
    of one person in DST) only that person is replaced: the other people's faces are moved to
    ``data_dst/aligned_others`` before training and merge. Ctrl-C while training saves the model and
    raises KeyboardInterrupt: an undertrained model is not merged."""
    from facelab.swap.predictor import load_predictor
    from facelab.swap.train import train

    check_range(identity_every, "identity_every", "swap", low=0)
    check_inputs(src, dst_video, dst_person)
    (merge_cfg or MergeConfig()).check()  # a merge option that cannot work is refused before hours of training
    src, dst_video, output = Path(src), Path(dst_video), Path(output)
    ws = workspace_of(output, workspace)
    model_dir = ws / "model"
    train_cfg = training_config(model_dir, iterations, train_cfg)  # checked before any work
    iterations = train_cfg.target_iter

    frames_dir = ws / "data_dst"
    info = probe(dst_video)
    have = len(list_images(frames_dir)) if frames_dir.is_dir() else 0
    if abs(have - info.frame_count) > 1:
        log.info("step 1/5: frames of %s", dst_video)
        extract_frames(dst_video, frames_dir)
    log.info("step 2/5: faces")
    src_faces = faceset_of(src, ws / "data_src" / "aligned", train_cfg.face_type)
    dst_faces = faceset_of(frames_dir, frames_dir / "aligned", train_cfg.face_type)
    if dst_person:
        from facelab.faceset.ops import keep_person

        kept, moved, _ = keep_person(dst_faces, faceset_of(dst_person, ws / "dst_person" / "aligned"))
        log.info("kept %d faces of the dst person, %d other faces moved to %s_others", kept, moved, dst_faces)
    log.info("step 3/5: training to iteration %d", iterations)
    if train(train_cfg, src_faces, dst_faces, model_dir).stopped == "interrupted":
        log.info("training stopped and saved in %s; run the same command again to go on (merge and video are "
                 "made once training reaches iteration %d)", model_dir, iterations)
        raise KeyboardInterrupt
    log.info("step 4/5: merge")
    merge_cfg = merge_cfg or MergeConfig()
    predictor = load_predictor(model_dir, merge_cfg.device, merge_cfg.precision)
    signed_as = credentials(model_dir) if merge_cfg.provenance else None  # hashing the weights only when signing
    stats = run_merge(predictor, merge_cfg, frames_dir, frames_dir / "merged",
                      frames_dir / "merged_mask", dst_faces, overwrite=True, credentials=signed_as)
    log.info("step 5/5: video")
    assemble_video(frames_dir / "merged", output, like=dst_video,
                   stamp=Stamp(signed_as) if signed_as else None)
    if identity_every:
        summary = score_identity(src_faces, dst_faces, output, identity_every)
        atomic_write_text(ws / "identity.json", json.dumps(summary, indent=2))
        log.info("identity: %.0f%% of %d scored frames are the src person, %.0f%% the dst person, %.0f%% neither, "
                 "%d lost (no face found); %s to src %.3f, to dst %.3f (%s)", 100 * summary["src_share"],
                 summary["frames"], 100 * summary["dst_share"], 100 * summary["neither_share"],
                 len(summary["lost_frames"]), summary["metric"], summary.get("score_src_mean", float("nan")),
                 summary.get("score_dst_mean", float("nan")), ws / "identity.json")
    return stats
