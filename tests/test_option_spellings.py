"""The names users type: DeepFaceLab's face type names, the reference ports' flag spellings (``--model_dir``,
``--training_data_src``, StarGAN's ``--image_root``, ...) and every option's snake-case flag all make the same
config, or the same parsed arguments, as facelab's one name for it."""

from __future__ import annotations

import argparse
import dataclasses
import typing
from pathlib import Path

import pytest

from facelab.align.face_types import FACE_TYPE_ALIASES, FACE_TYPES
from facelab.cli import build_parser
from facelab.core.config import (add_config_arguments, config_from_args, flag_name, load_config, other_spellings,
                                 save_config)
from facelab.extract.config import ExtractConfig
from facelab.merge.config import MergeConfig
from facelab.pfe.config import BackboneConfig, PFEConfig
from facelab.stargan.config import EditConfig, StarGANConfig
from facelab.swap.config import SwapConfig
from facelab.xseg.config import XSegConfig

CONFIGS = [ExtractConfig, SwapConfig, XSegConfig, MergeConfig, StarGANConfig, EditConfig, BackboneConfig, PFEConfig]


def _parser(cls: type) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser()
    add_config_arguments(p, cls)
    return p


def _other_value(f: dataclasses.Field, tp) -> typing.Any:
    """A valid value of option ``f`` that is not its default, so a flag that were ignored would show."""
    base, _ = (typing.get_args(tp)[0], True) if type(None) in typing.get_args(tp) else (tp, False)
    default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
    choices = f.metadata["choices"]
    if choices:
        other = next(c for c in choices if c not in (default if isinstance(default, list) else [default]))
        return [other] if typing.get_origin(base) is list else other
    if base is bool:
        return not default
    if typing.get_origin(base) is list:
        return [7] if typing.get_args(base)[0] is int else ["Other_Attr"]
    if base in (int, float):
        high = f.metadata["high"]
        value = (default or 0) + 1 if base is int else (default or 0.25) * 2
        return value if high is None or value <= high else (f.metadata["low"] or 0) + (high - (f.metadata["low"] or 0)) / 2
    return "other"


def _flag_args(flag: str, value) -> list[str]:
    if isinstance(value, bool):
        return [flag if value else "--no-" + flag[2:]]
    return [flag, *map(str, value)] if isinstance(value, list) else [flag, str(value)]


@pytest.mark.parametrize("cls", CONFIGS, ids=lambda c: c.__name__)
def test_every_other_spelling_of_every_option_makes_the_same_config(cls, capsys):
    """Each option's snake-case flag (``--batch_size``), the reference ports' names for it and each old name,
    in both spellings, parse to the config that facelab's own flag gives; an old name with one note naming
    that flag, the others silently (they stay); none of them is in ``--help``."""
    p, types_ = _parser(cls), typing.get_type_hints(cls)
    checked = 0
    for f in dataclasses.fields(cls):
        value = _other_value(f, types_[f.name])
        want = config_from_args(cls, p.parse_args(_flag_args(flag_name(f.name), value)))
        assert getattr(want, f.name) != getattr(cls(), f.name), f.name
        old = other_spellings(f.name, f.metadata["aliases"])
        for spelling in old + other_spellings(f.name, f.metadata["spellings"], own=True):
            args = [spelling, str(value).lower()] if isinstance(value, bool) else _flag_args(spelling, value)
            capsys.readouterr()
            assert config_from_args(cls, p.parse_args(args)) == want, (f.name, spelling)
            err = capsys.readouterr().err
            assert (f"'{spelling}' is now '{flag_name(f.name)}'" in err) == (spelling in old), (spelling, err)
            assert spelling + " " not in p.format_help()
            checked += 1
    assert checked >= sum("_" in f.name for f in dataclasses.fields(cls))


def test_a_bare_snake_case_bool_flag_switches_the_option_on():
    p = _parser(SwapConfig)
    assert config_from_args(SwapConfig, p.parse_args(["--eyes_mouth_prio"])).eyes_mouth_prio is True


@pytest.mark.parametrize("short", sorted(FACE_TYPE_ALIASES))
def test_deepfacelab_face_type_names_make_the_same_config(short, tmp_path):
    """``wf``, ``whole_face``, ... are stored as the one name (``whole``) from flags, YAML files, saved model
    configs and the Python API, so a resumed model and merge's face type comparisons see only that."""
    name = FACE_TYPE_ALIASES[short]
    for cls, option in ((ExtractConfig, "face_type"), (SwapConfig, "face_type"), (XSegConfig, "face_type"),
                        (MergeConfig, "output_face_type")):
        p = _parser(cls)
        cfg = config_from_args(cls, p.parse_args([flag_name(option), short]))
        assert cfg == config_from_args(cls, p.parse_args([flag_name(option), name])) == cls(**{option: short})
        assert getattr(cfg, option) == name
        (tmp_path / "c.yaml").write_text(f"{option}: {short}\n")
        assert load_config(cls, tmp_path / "c.yaml") == cfg
        save_config(cfg, tmp_path / "saved.yaml")
        assert f"{option}: {name}\n" in (tmp_path / "saved.yaml").read_text()
    args = build_parser().parse_args(["faceset", "resize", "DIR", "--size", "64", "--face-type", short])
    assert args.face_type == name
    assert "head" in FACE_TYPES and "head" not in FACE_TYPE_ALIASES  # DeepFaceLab's head is facelab's head


def test_an_unknown_face_type_is_still_refused(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["faceset", "resize", "DIR", "--size", "64", "--face-type", "wholeface"])
    assert "invalid choice: 'wholeface'" in capsys.readouterr().err


def _parsed(argv: list[str]) -> dict:
    return {k: v for k, v in vars(build_parser().parse_args(argv)).items() if k != "func"}


# (the reference ports' / DeepFaceLab's spelling, facelab's) of whole command lines
SPELLINGS = [
    (["train", "--training_data_src", "S", "--training_data_dst", "D", "--model_dir", "M", "--batch_size", "4"],
     ["train", "--src", "S", "--dst", "D", "--model-dir", "M", "--batch-size", "4"]),
    (["train", "--training-data-src-dir", "S", "--training-data-dst-dir", "D", "--model-dir", "M"],
     ["train", "--src", "S", "--dst", "D", "--model-dir", "M"]),
    (["export", "--model_dir", "M"], ["export", "--model-dir", "M"]),
    (["merge", "--model_dir", "M", "--input_dir", "I", "--output_dir", "O", "--output_mask_dir", "K",
      "--aligned_dir", "A"],
     ["merge", "--model-dir", "M", "--input-dir", "I", "--output-dir", "O", "--output-mask-dir", "K",
      "--aligned-dir", "A"]),
    (["xseg", "train", "--faceset", "F", "--model_dir", "M"], ["xseg", "train", "--faceset", "F", "--model-dir", "M"]),
    (["xseg", "apply", "F", "--model_dir", "M"], ["xseg", "apply", "F", "--model-dir", "M"]),
    (["xseg", "export", "--model_dir", "M"], ["xseg", "export", "--model-dir", "M"]),
    (["stargan", "test", "--checkpoint", "C", "--image_root", "I", "--metadata_path", "A", "--output_dir", "O"],
     ["stargan", "test", "--checkpoint", "C", "--image-root", "I", "--attr-path", "A", "--output-dir", "O"]),
    (["stargan", "fid", "--checkpoint", "C", "--image_root", "I", "--metadata_path", "A"],
     ["stargan", "fid", "--checkpoint", "C", "--image-root", "I", "--attr-path", "A"]),
]


@pytest.mark.parametrize("typed,canonical", SPELLINGS, ids=lambda argv: " ".join(argv[:2]))
def test_reference_flag_spellings_parse_like_facelabs(typed, canonical, capsys):
    """The reference ports' spellings stay: accepted silently (no note of an old name to be dropped)."""
    assert _parsed(typed) == _parsed(canonical)
    assert "is now" not in capsys.readouterr().err


def test_stargan_reference_arguments_make_the_same_training_config(tmp_path, capsys):
    args = build_parser().parse_args(["stargan", "train", "--image_root", "imgs", "--metadata_path", "attrs.txt",
                                      "--training_iterations", "50", "--model_dir", "run"])
    cfg = config_from_args(StarGANConfig, args)
    assert cfg == StarGANConfig(image_root=Path("imgs"), attr_path=Path("attrs.txt"), target_iter=50,
                                model_dir=Path("run"))
    (tmp_path / "ref.yaml").write_text("image_root: imgs\nmetadata_path: attrs.txt\ntraining_iterations: 50\n"
                                       "model_dir: run\n")
    assert load_config(StarGANConfig, tmp_path / "ref.yaml") == cfg
    assert "is now" not in capsys.readouterr().err  # the reference's names stay, silently


def test_a_required_flag_may_be_typed_either_way_but_only_once(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["export"])
    assert "--model-dir is required" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        build_parser().parse_args(["export", "--model-dir", "A", "--model_dir", "B"])
    assert "not allowed with" in capsys.readouterr().err
    help_text = build_parser()._subparsers._group_actions[0].choices["merge"].format_help()
    assert "--model-dir" in help_text and "--model_dir" not in help_text and "--input_dir" not in help_text
