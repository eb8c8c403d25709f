"""Face verification by the calibrated same-person rule: the rule itself, `pfe eval` on real LFW pairs,
`identity compare` / `identity pairs`, and identity QA of real clips (`facelab identity --source --video`).

LFW and the clips come from ``../shared/data``; the tests that need them skip when it is absent. The full
LFW evaluation (6000 pairs, ~20 min to embed on 2 cores) is the slow-marked test at the end.
"""

from __future__ import annotations

import csv
import json
import shutil

import cv2
import numpy as np
import pytest
from conftest import SHARED_DATA

from facelab.cli import main
from facelab.core.errors import FacelabError
from facelab.extract.config import ExtractConfig
from facelab.extract.pipeline import extract
from facelab.pfe.data import parse_pair_csv, parse_pairs, scan_identities
from facelab.pfe.model import PFEModel
from facelab.pfe.rule import SameRule, default_rule, fit_threshold, load_rule, save_rule

LFW = SHARED_DATA / "lfw"
VIDEOS = SHARED_DATA / "videos"
need_lfw = pytest.mark.skipif(not (LFW / "pairs.txt").is_file(), reason="../shared/data/lfw is absent")
need_videos = pytest.mark.skipif(not (VIDEOS / "lp_d0.mp4").is_file(), reason="../shared/data/videos is absent")


pytestmark = pytest.mark.usefixtures("one_thread")


# --- the rule ---------------------------------------------------------------------------------------


def test_rule_scores_decide_in_the_metric_direction_and_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(5, 8)), rng.normal(size=(3, 8))
    ones_a, ones_b = np.ones_like(a), np.ones_like(b)
    l2 = SameRule("l2", 3.0)
    matrix = l2.score_matrix(a, ones_a, b, ones_b)
    assert np.allclose(matrix, np.linalg.norm(a[:, None] - b[None], axis=2))
    assert np.allclose(l2.person_scores(a, ones_a, b, ones_b), matrix.mean(1))
    assert l2.same(2.9) and not l2.same(3.1)
    cos = SameRule("cosine", 0.5)
    assert cos.same(0.6) and not cos.same(0.4)
    # fitted thresholds separate a hand-made case in each direction
    dist, same = np.array([0.2, 0.3, 0.5, 0.9, 1.0]), np.array([True, True, True, False, False])
    assert 0.5 < fit_threshold("l2", dist, same) < 0.9
    assert -0.9 < fit_threshold("cosine", -dist, same) < -0.5
    save_rule(SameRule("mls", -100.0, fitted_on="x"), tmp_path / "rule.json")
    assert load_rule(tmp_path / "rule.json") == SameRule("mls", -100.0, fitted_on="x")
    (tmp_path / "bad.json").write_text('{"metric": "euclid", "threshold": 1}')
    with pytest.raises(FacelabError, match="metric='euclid' is not one of"):
        load_rule(tmp_path / "bad.json")


def test_the_default_rule_is_dlib_l2_fitted_on_lfw():
    rule = default_rule()
    assert rule.metric == "l2" and rule.backbone == "dlib" and "pairs.txt" in rule.fitted_on
    assert 0.5 < rule.threshold < 0.7 and rule.accuracy_mean > 0.99
    assert PFEModel.deterministic(device="cpu").rule == rule


# --- pfe eval on real LFW pairs --------------------------------------------------------------------


def _lfw_subset(tmp_path, per_fold: int, folds: int = 10):
    """A pairs.txt with the first ``per_fold`` matched and mismatched pairs of each of LFW's folds."""
    lines = (LFW / "pairs.txt").read_text().splitlines()[1:]
    out = [f"{folds} {per_fold}"]
    for k in range(folds):
        block = lines[600 * k : 600 * (k + 1)]
        out += block[:per_fold] + block[300 : 300 + per_fold]
    path = tmp_path / "pairs.txt"
    path.write_text("\n".join(out) + "\n")
    return path


@need_lfw
@pytest.mark.slow  # real LFW / clips: about 40 s each
def test_eval_on_real_lfw_pairs_counts_missed_faces_and_caches(tmp_path, monkeypatch, capsys):
    """120 real LFW pairs (6 + 6 from each fold), one image replaced by a face-free patch of an LFW photo:
    that pair is counted, not dropped; a second run reads the embeddings from the cache."""
    monkeypatch.setenv("FACELAB_CACHE", str(tmp_path / "cache"))
    pairs_file = _lfw_subset(tmp_path, 6)
    data = tmp_path / "lfw"
    pairs = parse_pairs(pairs_file, LFW / "images")
    for path in set(pairs.first) | set(pairs.second):
        (data / path.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, data / path.parent.name / path.name)
    victim = data / pairs.second[0].parent.name / pairs.second[0].name
    cv2.imwrite(str(victim), cv2.resize(cv2.imread(str(victim))[:50, :50], (250, 250)))  # a corner: no face
    out, rule = tmp_path / "report.json", tmp_path / "rule.json"
    args = ["pfe", "eval", "--pairs", str(pairs_file), "--data", str(data), "--device", "cpu", "-o", str(out)]
    assert main([*args, "--save-rule", str(rule)]) == 0
    report = json.loads(out.read_text())
    assert report["pairs"] == 120 and report["pairs_without_face"] == 1 and report["images_without_face"] == 1
    assert report["missing_images"] == [str(victim)]
    l2, cos = report["l2"], report["cosine"]
    assert l2["folds"] == 10 and l2["accuracy_mean"] >= 0.95 and l2["accuracy_all_pairs"] < l2["accuracy_mean"]
    assert 0.5 < l2["threshold"] < 0.7 and "mls" not in report  # no uncertainty module: no MLS
    assert set(report["templates"]) >= {"mean_l2", "l2_to_mean", "mls_fused"}
    assert load_rule(rule).metric == report["rule"]["metric"] and "119 pairs" in load_rule(rule).fitted_on
    first = capsys.readouterr().out
    assert "1 image(s) without a face, 1 pair(s) not scored" in first
    # the second run embeds nothing: the same figures from the cache
    assert main(args) == 0
    again = json.loads(out.read_text())
    assert again["l2"] == l2 and again["embed_seconds"] < report["embed_seconds"] / 3
    # a changed file is embedded again: the patch becomes a face once more
    shutil.copy(pairs.second[0], victim)
    assert main(args) == 0 and json.loads(out.read_text())["images_without_face"] == 0


@need_lfw
def test_save_rule_without_a_path_needs_a_model(tmp_path, capsys):
    assert main(["pfe", "eval", "--pairs", str(LFW / "pairs.txt"), "--data", str(LFW / "images"), "--save-rule"]) == 2
    assert "needs --model" in capsys.readouterr().err


@pytest.mark.slow
@need_lfw
def test_full_lfw_reproduces_the_shipped_rule(tmp_path):
    """The documented benchmark: all 6000 pairs (cached embeddings make re-runs fast)."""
    out = tmp_path / "report.json"
    assert main(["pfe", "eval", "--pairs", str(LFW / "pairs.txt"), "--data", str(LFW / "images"), "--device", "cpu",
                 "-o", str(out)]) == 0
    report = json.loads(out.read_text())
    rule = default_rule()
    assert report["pairs"] == 6000 and report["l2"]["threshold"] == pytest.approx(rule.threshold)
    assert report["l2"]["accuracy_mean"] == pytest.approx(rule.accuracy_mean)


@pytest.mark.skipif(not (SHARED_DATA / "celeba").is_dir(), reason="../shared/data/celeba is absent")
def test_celeba_identities_are_read_from_its_identity_file(tmp_path):
    """`pfe train --data ../shared/data/celeba` trains on CelebA's own layout: 160 people x 30 images."""
    ident = scan_identities(SHARED_DATA / "celeba")
    assert len(ident.names) == 160 and np.bincount(ident.labels).tolist() == [30] * 160
    assert all(p.parent == SHARED_DATA / "celeba" / "images" for p in ident.paths)
    (tmp_path / "images").mkdir()
    (tmp_path / "identity_CelebA.txt").write_text("000001.jpg 7\n")
    with pytest.raises(FacelabError, match=r"identity_CelebA.txt:1: .*000001.jpg not found"):
        scan_identities(tmp_path)


@need_lfw
def test_views_average_fixed_views_and_travel_with_the_rule(tmp_path, monkeypatch, capsys):
    """``--views N``: each face's embedding is the mean over N fixed views of its chip (the chip, its mirror,
    ...), the same on every call (dlib's own jitters are not); the rule fitted that way records N and the
    commands that use it embed the same way."""
    from facelab.detect.chip_views import MAX_VIEWS, chip_view
    from facelab.detect.dlib_models import DlibEmbedder
    from facelab.metrics.identity import IdentityProbe
    from facelab.pfe.features import FaceFinder

    monkeypatch.setenv("FACELAB_CACHE", str(tmp_path / "cache"))
    image = cv2.imread(str(_lfw("George_W_Bush", 7)))
    landmarks = FaceFinder().find(image)
    embedder = DlibEmbedder()
    chip = embedder.chip(image, landmarks)
    views = [chip_view(chip, v) for v in range(MAX_VIEWS)]
    assert np.array_equal(views[0], chip) and np.array_equal(views[1], chip[:, ::-1])
    assert all(not np.array_equal(views[v], views[w]) for v in range(MAX_VIEWS) for w in range(v))
    one = embedder.embed_chips([chip, chip[:, ::-1]])
    two = embedder.embed_chips([chip], views=2)
    assert np.allclose(two[0], one.mean(0), atol=1e-6) and np.array_equal(two, embedder.embed_chips([chip], 2))
    assert 0.01 < np.linalg.norm(two[0] - one[0]) < 0.3  # another vector, still the same face
    # the identity probe embeds with its rule's views
    probe = IdentityProbe(SameRule("l2", 0.62, views=2))
    assert np.allclose(probe.embed([image], [landmarks]), two, atol=1e-6)
    assert PFEModel.deterministic(device="cpu").backbone.views == 1  # the shipped rule: one view
    # pfe eval --views 2 stores the count with the rule; its embeddings are cached apart from one view's
    pairs_file = _lfw_subset(tmp_path, 2, folds=2)
    args = ["pfe", "eval", "--pairs", str(pairs_file), "--data", str(LFW / "images"), "--device", "cpu"]
    assert main([*args, "-o", str(tmp_path / "one.json")]) == 0
    assert main([*args, "--views", "2", "--save-rule", str(tmp_path / "rule.json"), "-o", str(tmp_path / "two.json")]) == 0
    one_view, two_views = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("one", "two"))
    assert one_view["views"] == 1 and two_views["views"] == 2 and load_rule(tmp_path / "rule.json").views == 2
    assert two_views["l2"]["threshold"] != one_view["l2"]["threshold"]
    capsys.readouterr()
    assert main([*args, "--views", str(MAX_VIEWS + 1)]) == 2
    assert f"views must be a whole number from 1 to {MAX_VIEWS}, not {MAX_VIEWS + 1}" in capsys.readouterr().err


@need_lfw
def test_the_views_benchmark_scores_each_count_as_pfe_eval_does(tmp_path, monkeypatch):
    """benchmarks/lfw_views.py (each view embedded once, every count scored from the running means) gives
    the threshold `pfe eval --views 2` fits on the same pairs, so its table is what the command gives; a run
    with more views embeds only the new ones (kept in $FACELAB_CACHE/lfw_views) and scores the rest the same."""
    import subprocess
    import sys

    from conftest import REPO

    monkeypatch.setenv("FACELAB_CACHE", str(tmp_path / "cache"))
    pairs_file = _lfw_subset(tmp_path, 1)
    assert main(["pfe", "eval", "--pairs", str(pairs_file), "--data", str(LFW / "images"), "--device", "cpu",
                 "--views", "2", "-o", str(tmp_path / "r.json")]) == 0
    report = json.loads((tmp_path / "r.json").read_text())
    def views_run(views: int) -> dict:
        proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "lfw_views.py"), "--pairs", str(pairs_file),
                               "--views", str(views)], capture_output=True, text=True, timeout=300, cwd=REPO)
        assert proc.returncode == 0, proc.stderr[-2000:]
        return json.loads(proc.stdout.strip().splitlines()[-1])

    record = views_run(2)
    assert record["pairs"] == report["pairs"] == 20 and set(record["views"]) == {"1", "2"}
    assert record["views"]["2"]["threshold"] == pytest.approx(report["l2"]["threshold"], abs=1e-4)
    assert record["views"]["2"]["accuracy_mean"] == pytest.approx(report["l2"]["accuracy_mean"])
    # overwrite the cached second view with the first: a run with 3 views that reuses the cache (and embeds
    # only view 3) then scores 2 views as 1
    (cached,) = (tmp_path / "cache" / "lfw_views").glob("*.npz")
    with np.load(cached) as z:
        kept = dict(z)
    assert kept["views"].shape[1:] == (2, 128) and kept["found"].all()
    kept["views"][:, 1] = kept["views"][:, 0]
    np.savez(cached, **kept)
    more = views_run(3)
    assert set(more["views"]) == {"1", "2", "3"} and more["views"]["1"] == record["views"]["1"]
    assert more["views"]["2"]["threshold"] == record["views"]["1"]["threshold"] != record["views"]["2"]["threshold"]
    with np.load(cached) as z:
        assert z["views"].shape[1:] == (3, 128) and np.array_equal(z["views"][:, :2], kept["views"])


@need_lfw
@pytest.mark.skipif(not (SHARED_DATA / "celeba").is_dir(), reason="../shared/data/celeba is absent")
def test_worker_processes_give_the_embeddings_and_the_pool_of_one_process(tmp_path):
    """`pfe eval` / `pfe embed` and `pfe train`'s feature pool spread the faces over worker processes: the same
    rows in the same order as in one process, a face-free image included; the pool's augmentations are
    seeded per image, so its copies do not depend on the number of workers either."""
    from types import SimpleNamespace

    from facelab.pfe.backbones import DlibBackbone
    from facelab.pfe.data import IdentityFolder
    from facelab.pfe.features import MIN_PARALLEL, FaceFinder, build_pool, embed_files, worker_count

    backbone, finder = DlibBackbone(), FaceFinder(pick="centre")
    blank = tmp_path / "blank.png"
    cv2.imwrite(str(blank), np.full((250, 250, 3), 128, np.uint8))
    files = sorted((LFW / "images").glob("A*/*.jpg"))[:MIN_PARALLEL]
    files.insert(10, blank)
    assert worker_count(2, backbone, len(files)) == 2 and worker_count(2, backbone, MIN_PARALLEL - 1) == 1
    assert worker_count(2, SimpleNamespace(spec=("sphere", "cuda", "fp32", 1)), 10_000) == 1  # a GPU batches
    one, two = (embed_files(files, backbone, finder, workers=w) for w in (1, 2))
    assert not one.found[10] and one.found.sum() == len(files) - 1
    assert (one.found == two.found).all() and (one.how == two.how).all()
    assert np.allclose(one.mu, two.mu, atol=1e-6) and np.allclose(one.features, two.features, atol=1e-4)
    assert np.linalg.norm(one.mu[11] - one.mu[12]) > 0.1  # rows are distinct faces, in file order
    ident = scan_identities(SHARED_DATA / "celeba", max_per_class=1)
    some = IdentityFolder(ident.paths[:MIN_PARALLEL], ident.labels[:MIN_PARALLEL], ident.names)
    pools = [build_pool(some, backbone, FaceFinder(), copies=2, degrade_prob=0.5, seed=3, workers=w) for w in (1, 2)]
    assert np.allclose(pools[0].mu, pools[1].mu, atol=1e-6) and (pools[0].labels == pools[1].labels).all()
    assert (pools[0].degraded == pools[1].degraded).all() and 0 < pools[0].degraded.mean() < 1
    assert (pools[0].labels[::2] == pools[0].labels[1::2]).all()  # each image's two copies side by side
    assert np.linalg.norm(pools[0].mu[0] - pools[0].mu[1]) > 1e-3  # ... and augmented differently


# --- identity compare / identity pairs ---------------------------------------------------------------


def _lfw(name: str, n: int):
    return LFW / "images" / name / f"{name}_{n:04d}.jpg"


@need_lfw
def test_compare_says_same_or_different_for_real_photos(tmp_path, capsys):
    same = [str(_lfw("George_W_Bush", 7)), str(_lfw("George_W_Bush", 16))]
    assert main(["identity", "compare", *same, "--device", "cpu", "-o", str(tmp_path / "c.json")]) == 0
    out = json.loads((tmp_path / "c.json").read_text())
    assert out["same"] and out["metric"] == "l2" and out["score"] < default_rule().threshold
    assert "-> same person" in capsys.readouterr().out
    assert main(["identity", "compare", same[0], str(_lfw("Colin_Powell", 40)), "--device", "cpu"]) == 0
    assert "-> different people" in capsys.readouterr().out
    # a folder of one person's photos against another photo of him
    folder = tmp_path / "bush"
    folder.mkdir()
    for n in (65, 145, 150):
        shutil.copy(_lfw("George_W_Bush", n), folder)
    assert main(["identity", "compare", str(folder), same[0], "--device", "cpu", "-o", str(tmp_path / "f.json")]) == 0
    out = json.loads((tmp_path / "f.json").read_text())
    assert out["faces_a"] == 3 and out["same"]


@need_lfw
def test_pairs_csv_gives_each_decision_and_accuracy_far_frr(tmp_path, capsys):
    pairs = parse_pairs(_lfw_subset(tmp_path, 5, folds=2), LFW / "images")  # 10 genuine, 10 impostor
    lines = ["file_x,file_y,label"] + [f"{a.relative_to(LFW)},{b.relative_to(LFW)},{'Yes' if s else 'No'}"
                                       for a, b, s in zip(pairs.first, pairs.second, pairs.same)]
    listing = tmp_path / "pairs.csv"
    listing.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out.csv"
    assert main(["identity", "pairs", str(listing), "--root", str(LFW), "-o", str(out), "--device", "cpu"]) == 0
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 20 and {r["decision"] for r in rows} <= {"same", "different"}
    right = sum((r["decision"] == "same") == (r["label"] == "same") for r in rows)
    summary = capsys.readouterr().out.strip().splitlines()[-1]
    assert right >= 19 and f"accuracy {100 * right / 20:.2f}%" in summary and "FAR" in summary and "FRR" in summary
    decided_same = [float(r["l2"]) < default_rule().threshold for r in rows]
    assert decided_same == [r["decision"] == "same" for r in rows]
    # without labels: decisions only; bad lines: one line naming the file, line and fix
    listing.write_text("\n".join(ln.rsplit(",", 1)[0] for ln in lines[1:]) + "\n")
    assert main(["identity", "pairs", str(listing), "--root", str(LFW), "--device", "cpu"]) == 0
    assert "accuracy" not in capsys.readouterr().out
    listing.write_text(f"{lines[1]}\n{lines[2].rsplit(',', 1)[0]},maybe\n")
    with pytest.raises(FacelabError, match=r"pairs.csv:2: label 'maybe' is not Yes/No"):
        parse_pair_csv(listing, LFW)
    listing.write_text("nobody.jpg,x.jpg\n")
    with pytest.raises(FacelabError, match=r"pairs.csv:1: .*nobody.jpg not found"):
        parse_pair_csv(listing, LFW)


# --- identity QA of real clips ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def facesets(tmp_path_factory):
    """Aligned facesets of three real clips, 5 frames a second."""
    if not (VIDEOS / "lp_d0.mp4").is_file():
        pytest.skip("../shared/data/videos is absent")
    root = tmp_path_factory.mktemp("qa")
    for clip in ("lp_d0", "lp_d18"):
        extract(VIDEOS / f"{clip}.mp4", root / clip, ExtractConfig(size=128, fps=5, workers=1))
    return root


def _qa(tmp_path, *args) -> dict:
    out = tmp_path / "summary.json"
    assert main(["identity", *args, "--device", "cpu", "--summary", str(out), "-o", str(tmp_path / "frames.csv")]) == 0
    return json.loads(out.read_text())


@need_videos
@pytest.mark.slow  # about 35 s
def test_the_unswapped_dst_clip_is_not_the_src_person(facesets, tmp_path):
    """A 'swap' that changed nothing: the dst clip itself, checked against another man's faceset."""
    summary = _qa(tmp_path, "--source", str(facesets / "lp_d18"), "--video", str(VIDEOS / "lp_d19.mp4"), "--every", "5")
    assert summary["frames"] == 50 and summary["src_share"] <= 0.05 and summary["neither_share"] >= 0.95
    rows = list(csv.DictReader((tmp_path / "frames.csv").open()))
    assert len(rows) == 50 and all(float(r["score_src"]) > default_rule().threshold for r in rows if r["who"] != "lost")
    # two East Asian men whom dlib's embedding puts close together (docs/pfe.md): with the dst person
    # given, each frame is judged src, dst or neither, and the dst clip is the dst person
    summary = _qa(tmp_path, "--source", str(facesets / "lp_d0"), "--video", str(VIDEOS / "lp_d12.mp4"), "--every", "4",
                  "--dst", str(VIDEOS / "lp_d12.mp4"))
    assert summary["frames"] == 46 and summary["src_share"] <= 0.05 and summary["dst_share"] >= 0.95


@need_videos
@pytest.mark.slow  # real LFW / clips: about 40 s each
def test_two_clips_of_one_person_are_the_same_person(tmp_path):
    """MEAD actor M030, neutral and happy: different clips, one man, >= 95 % of the frames."""
    summary = _qa(tmp_path, "--source", str(VIDEOS / "dreamtalk_M030_front_neutral_level1_001.mp4"),
                  "--video", str(VIDEOS / "dreamtalk_M030_front_happy_level3_001.mp4"), "--every", "3",
                  "--dst", str(VIDEOS / "lp_d12.mp4"))
    assert summary["frames"] == 32 and summary["src_share"] >= 0.95 and summary["lost_frames"] == []
    assert summary["score_src_p95"] < default_rule().threshold < summary["score_dst_mean"] + 0.1


@need_videos
def test_a_frame_without_a_face_counts_as_lost(facesets, tmp_path):
    """A clip whose frames hold no face (the grey background corner of lp_d18, upscaled)."""
    from facelab.io.video import iter_frames, write_video

    frames = [cv2.resize(f[:60, :60], (480, 480)) for i, f in iter_frames(VIDEOS / "lp_d18.mp4") if i < 6]
    write_video(tmp_path / "empty.mp4", frames, 25)
    summary = _qa(tmp_path, "--source", str(facesets / "lp_d18"), "--video", str(tmp_path / "empty.mp4"))
    assert summary["lost_frames"] == list(range(6)) and summary["lost_share"] == 1 and summary["src_share"] == 0
