"""Per-frame merge options: what the interactive merger saves and ``facelab merge`` uses, and the log that
says which options each merged frame was made with.

DeepFaceLab's merger lets the user tune mask, erode, blur, colour transfer and the rest frame by frame; a
frame stepped to takes the settings of the one before it. Here the same idea is stored compactly: a frame
that has options of its own passes them on to the frames after it, up to the next frame that has its own
(its *run*); frames before the first such frame use the command's options. Only the options that say how a
face is pasted (``FRAME_OPTIONS``) vary by frame; the segmenter, output format, provenance and speed
options hold for the whole merge.

Both files lie next to the merge's output folder (where ``--preview`` writes its panel too), so a merge
resumed a week later, by ``facelab merge`` or by the page, finds them, and the folder itself holds only
frames: for ``WS/data_dst/merged``, ``WS/data_dst/merged_settings.yaml`` (written by the page, readable
and editable by hand) and ``WS/data_dst/merged_log.tsv`` (one line per merged frame: its file name and a
digest of its options, appended as frames are written). The log is what makes a resumed merge redo
exactly the frames whose options changed since they were written, and skip the rest.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from pathlib import Path

import yaml

from facelab.core.config import config_from_dict
from facelab.core.errors import FacelabError
from facelab.core.files import atomic_write_text, disk_errors
from facelab.merge.config import FRAME_OPTIONS, MergeConfig

log = logging.getLogger("facelab")
_HEADER = """\
# facelab merge: per-frame options of the merged frames in the folder next to this file, written by `facelab merge --interactive`, used by `facelab merge`.
# Each frame listed (by file name without extension) and the frames after it, up to the next one listed,
# are merged with its options; frames before the first one listed use the command's options.
"""


def settings_path(output_dir: str | Path) -> Path:
    """Where the per-frame settings of the merge into ``output_dir`` are kept."""
    folder = Path(output_dir).resolve()
    return folder.with_name(f"{folder.name}_settings.yaml")


def log_path(output_dir: str | Path) -> Path:
    """Where the merge into ``output_dir`` logs the options each frame was written with."""
    folder = Path(output_dir).resolve()
    return folder.with_name(f"{folder.name}_log.tsv")


def frame_values(cfg: MergeConfig) -> dict:
    """The per-frame options of ``cfg``."""
    return {name: getattr(cfg, name) for name in FRAME_OPTIONS}


def options_digest(values: dict) -> str:
    """A short digest of a frame's options, for the merge log."""
    return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()[:16]


class FrameSettings:
    """The per-frame options of one merge: ``base`` (the command's options) and, for some frames (by
    index into ``stems``, the frame files' names without extension), options of their own."""

    def __init__(self, base: MergeConfig, stems: list[str], path: Path | None = None):
        self.base, self.stems, self.path = base, list(stems), path
        self.own: dict[int, dict] = {}

    @classmethod
    def load(cls, path: str | Path, base: MergeConfig, stems: list[str]) -> FrameSettings:
        """The settings saved at ``path`` (none yet if the file does not exist); a damaged file is one line."""
        path = Path(path)
        settings = cls(base, stems, path)
        if not path.is_file():
            return settings
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise FacelabError(f"{path} is not valid YAML ({reason}); fix it or delete it to merge with the "
                               "command's options") from None
        frames = data.get("frames") if isinstance(data, dict) else None
        if not isinstance(frames, dict):
            raise FacelabError(f"{path} must hold 'frames:' mapping frame names to options; fix it or delete it")
        index = {stem: k for k, stem in enumerate(stems)}
        missing = []
        for stem, values in frames.items():
            k = index.get(str(stem))
            if k is None:
                missing.append(str(stem))
                continue
            settings.own[k] = settings._checked(values, f"{path} (frame {stem})", frame_values(base))
        if missing:
            log.warning("%s names %d frames that are not in the input folder (first: %s); their options are ignored",
                        path, len(missing), missing[0])
        return settings

    def _checked(self, values, source: str, start: dict) -> dict:
        """``start`` updated with ``values`` (per-frame options only), checked as the command line is."""
        if not isinstance(values, dict):
            raise FacelabError(f"{source}: a frame's options are a mapping of option: value")
        unknown = sorted(set(values) - set(FRAME_OPTIONS))
        if unknown:
            raise FacelabError(f"{source}: {', '.join(unknown)} cannot vary by frame; per-frame options are "
                               f"{', '.join(FRAME_OPTIONS)}")
        cfg = config_from_dict(MergeConfig, {**start, **values}, source, base=self.base)
        return frame_values(cfg)

    # ----------------------------------------------------------------------------------------- reading
    def owner(self, k: int) -> int | None:
        """The frame whose options frame ``k`` uses (``k`` itself, an earlier frame, or None: the command's)."""
        earlier = [j for j in self.own if j <= k]
        return max(earlier) if earlier else None

    def values(self, k: int) -> dict:
        owner = self.owner(k)
        return dict(self.own[owner]) if owner is not None else frame_values(self.base)

    def config(self, k: int) -> MergeConfig:
        """The options frame ``k`` is merged with."""
        return dataclasses.replace(self.base, **self.values(k))

    def run(self, k: int) -> tuple[int, int]:
        """The first and last frame that share frame ``k``'s options by inheritance (its run)."""
        owner = self.owner(k)
        later = [j for j in self.own if j > k]
        return (0 if owner is None else owner), (min(later) - 1 if later else len(self.stems) - 1)

    def snapshot(self) -> FrameSettings:
        """A copy that later changes to these settings do not reach (what a running merge works from)."""
        copy = FrameSettings(self.base, self.stems, self.path)
        copy.own = {k: dict(v) for k, v in self.own.items()}
        return copy

    def mask_modes(self) -> set[str]:
        return {self.base.mask_mode, *(v["mask_mode"] for v in self.own.values())}

    # ----------------------------------------------------------------------------------------- changing
    def set(self, k: int, changes: dict) -> None:
        """Change frame ``k``'s options; the frames after it that have none of their own follow."""
        self._check_frame(k)
        self.own[k] = self._checked(changes, "frame options", self.values(k))
        self._tidy()

    def apply(self, first: int, last: int, values: dict) -> None:
        """Give frames ``first..last`` the options ``values`` (missing ones: those of frame ``first``);
        the frames after ``last`` keep the options they had."""
        self._check_frame(first)
        self._check_frame(last)
        if last < first:
            raise FacelabError(f"frames {first + 1}..{last + 1} are no range; give the first frame first")
        checked = self._checked(values, "frame options", self.values(first))
        if last + 1 < len(self.stems) and last + 1 not in self.own:
            self.own[last + 1] = self.values(last + 1)
        for j in [j for j in self.own if first < j <= last]:
            del self.own[j]
        self.own[first] = checked
        self._tidy()

    def _check_frame(self, k: int) -> None:
        if not 0 <= k < len(self.stems):
            raise FacelabError(f"no frame {k + 1}: the merge has {len(self.stems)} frames")

    def _tidy(self) -> None:
        """Drop own options equal to the ones the frame would inherit anyway: each entry marks a change.
        The first entry stays even when it equals the command's options, so the frames from it on keep
        what was tuned when the command's options change."""
        previous = None
        for k in sorted(self.own):
            if previous is not None and self.own[k] == previous:
                del self.own[k]
            else:
                previous = self.own[k]

    def save(self) -> None:
        """Write the settings (atomically) to :attr:`path`."""
        if self.path is None:
            raise FacelabError("these merge settings have no file to be saved to")
        frames = {self.stems[k]: self.own[k] for k in sorted(self.own)}
        with disk_errors(self.path):
            atomic_write_text(self.path, _HEADER + yaml.safe_dump({"frames": frames}, sort_keys=False,
                                                                   default_flow_style=None, width=200))


class MergeLog:
    """The log of the merge into ``output_dir``: the options digest each merged frame was written with
    (the last line for a file wins; a line cut off by a kill is ignored)."""

    def __init__(self, output_dir: str | Path):
        self.path = log_path(output_dir)
        self.digests: dict[str, str] = {}
        if self.path.is_file():
            for line in self.path.read_text(errors="replace").splitlines():
                name, sep, digest = line.partition("\t")
                if sep and len(digest) == 16:
                    self.digests[name] = digest

    def stale(self, name: str, digest: str) -> bool:
        """Whether the file ``name`` was written with other options (a file merged before the log
        existed counts as current: the merge that made it is not known)."""
        return self.digests.get(name, digest) != digest

    def record(self, name: str, digest: str) -> None:
        with disk_errors(self.path), open(self.path, "a") as fh:
            fh.write(f"{name}\t{digest}\n")
        self.digests[name] = digest
