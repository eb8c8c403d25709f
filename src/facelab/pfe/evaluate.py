"""Verification measured on real pairs: LFW's 10-fold protocol for every score, templates, and a user's pair list.

:func:`evaluate_pairs` is ``facelab pfe eval``: each score (dlib's L2 distance, cosine, and PFE's MLS with
a trained uncertainty module) gets the standard 10-fold accuracy (threshold chosen on nine folds, tested
on the tenth) and TAR at the given FARs. Faces the detector misses are counted, and every accuracy is
also given over all pairs with a pair that lacks a face counted as an error.

:func:`evaluate_templates` is the template variant that PFE's fusion applies to: each pair's first image is
replaced by every image of that person in the pairs file except the second image, the probe.

:func:`score_pair_list` is ``facelab identity pairs``: distance and decision of each listed pair by the
model's calibrated rule, and with labels its accuracy, FAR and FRR.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass

import numpy as np

from facelab.core.errors import FacelabError
from facelab.pfe.cache import FileEmbeddings
from facelab.pfe.data import Pairs
from facelab.pfe.features import FaceFinder, embed_files
from facelab.pfe.fusion import fuse
from facelab.pfe.model import PFEModel
from facelab.pfe.rule import METRICS, SameRule, fit_threshold, pair_scores
from facelab.pfe.verify import kfold_accuracy, mls_scores, tar_at_far


@dataclass
class PairEmbeddings:
    """The pairs with the backbone's output for their images: ``a``/``b`` index rows of ``files``."""

    pairs: Pairs
    files: list
    emb: FileEmbeddings
    sigma_sq: np.ndarray
    a: np.ndarray
    b: np.ndarray
    seconds: float

    @property
    def both_found(self) -> np.ndarray:
        return self.emb.found[self.a] & self.emb.found[self.b]


def embed_pairs(model: PFEModel, pairs: Pairs, finder: FaceFinder, cache: bool = True, workers: int = 0) -> PairEmbeddings:
    """The pairs' images embedded once each (``workers``: see :func:`~facelab.pfe.features.embed_files`)."""
    start = time.perf_counter()
    files = sorted(set(pairs.first) | set(pairs.second))
    row = {p: i for i, p in enumerate(files)}
    emb = embed_files(files, model.backbone, finder, desc="pair images", cache=cache, workers=workers)
    sigma_sq = model.sigma_sq(emb.features)
    a, b = np.array([row[p] for p in pairs.first]), np.array([row[p] for p in pairs.second])
    return PairEmbeddings(pairs, files, emb, sigma_sq, a, b, time.perf_counter() - start)


def metrics_of(model: PFEModel) -> tuple[str, ...]:
    return METRICS if model.has_uncertainty else tuple(m for m in METRICS if m != "mls")


def _fold_report(metric: str, scores: np.ndarray, same: np.ndarray, folds: np.ndarray, total: int,
                 fars: list[float]) -> dict:
    """10-fold accuracy of one score; ``total`` pairs in all, the ones not scored counted as errors."""
    sign = -1.0 if metric == "l2" else 1.0
    res = kfold_accuracy(sign * scores, same, folds)
    correct = sum(acc * (folds == k).sum() for acc, k in zip(res.accuracies, np.unique(folds)))
    out = {"same_when": "<" if metric == "l2" else ">", "accuracy_mean": res.mean, "accuracy_std": res.std,
           "folds": len(res.accuracies),
           "accuracy_all_pairs": float(correct / total), "fold_thresholds": (sign * res.thresholds).tolist(),
           "threshold": fit_threshold(metric, scores, same)}
    for far in fars:
        tar, thr, got = tar_at_far(sign * scores, same, far)
        out[f"tar@far={far:g}"] = {"tar": tar, "threshold": sign * thr, "achieved_far": got}
    return out


def evaluate_pairs(model: PFEModel, pairs: Pairs, finder: FaceFinder, fars: list[float], cache: bool = True,
                   templates: bool = True, workers: int = 0) -> dict:
    """The LFW protocol for every score the model gives (see the module docstring); ``report["rule"]`` is the
    most accurate score with its threshold fitted on all pairs."""
    pe = embed_pairs(model, pairs, finder, cache, workers)
    keep = pe.both_found
    if not keep.any():
        raise FacelabError("no pair has a detectable face on both sides; check --data, or pass --aligned for face crops")
    a, b, same, folds = pe.a[keep], pe.b[keep], pairs.same[keep], pairs.folds[keep]
    report: dict = {"pairs": len(keep), "pairs_scored": int(keep.sum()), "pairs_without_face": int((~keep).sum()),
                    "views": model.backbone.views,
                    "images": len(pe.files), "images_without_face": int((~pe.emb.found).sum()),
                    "found_by": dict(Counter(pe.emb.how.tolist())), "embed_seconds": round(pe.seconds, 1),
                    "missing_images": [str(pe.files[i]) for i in np.flatnonzero(~pe.emb.found)]}
    mu, sig = pe.emb.mu, pe.sigma_sq
    for metric in metrics_of(model):
        scores = pair_scores(metric, mu[a], sig[a], mu[b], sig[b])
        report[metric] = _fold_report(metric, scores, same, folds, len(keep), fars)
    if templates:
        report["templates"] = evaluate_templates(model, pe, fars)
    best = max(metrics_of(model), key=lambda m: report[m]["accuracy_mean"])  # ties: the first, l2
    report["rule"] = {"metric": best, "threshold": report[best]["threshold"],
                      "accuracy_mean": report[best]["accuracy_mean"], "accuracy_std": report[best]["accuracy_std"]}
    return report


def rule_from_report(report: dict, backbone: str, fitted_on: str) -> SameRule:
    return SameRule(**report["rule"], backbone=backbone, views=report["views"], fitted_on=fitted_on)


def evaluate_templates(model: PFEModel, pe: PairEmbeddings, fars: list[float]) -> dict:
    """Template (set-to-image) verification built from the pairs file: the first side of each pair becomes
    every found image of that person except the probe (people are named by their image folder, as in LFW).

    Scores: ``mean_l2`` (mean L2 distance to the template's faces: the rule's way, so the pair-fitted
    threshold applies), ``l2_to_mean`` (L2 to the mean embedding), ``mls_fused`` (MLS to PFE's fused
    Gaussian) and, with an uncertainty module, ``mean_mls``. ``pair_rule_accuracy`` applies the
    threshold fitted on single pairs unchanged: how well that rule carries over to templates.
    """
    found = pe.emb.found
    by_person: dict[str, list[int]] = {}
    for i, path in enumerate(pe.files):
        if found[i]:
            by_person.setdefault(path.parent.name, []).append(i)
    mu, sig = pe.emb.mu.astype(np.float64), pe.sigma_sq.astype(np.float64)
    metrics = {"mean_l2": "l2", "l2_to_mean": "l2", "mls_fused": "mls", **({"mean_mls": "mls"} if model.has_uncertainty else {})}
    scores: dict[str, list[float]] = {k: [] for k in metrics}
    sizes, keep = [], pe.both_found.copy()
    for k, (i, j) in enumerate(zip(pe.a, pe.b)):
        members = [m for m in by_person.get(pe.files[i].parent.name, []) if m != j] if keep[k] else []
        if not members:
            keep[k] = False
            continue
        sizes.append(len(members))
        t_mu, t_sig, p_mu, p_sig = mu[members], sig[members], mu[j : j + 1], sig[j : j + 1]
        scores["mean_l2"].append(pair_scores("l2", t_mu, t_sig, np.repeat(p_mu, len(members), 0), None).mean())
        scores["l2_to_mean"].append(float(np.linalg.norm(t_mu.mean(0) - p_mu[0])))
        f_mu, f_sig = fuse(t_mu, t_sig)
        scores["mls_fused"].append(float(mls_scores(p_mu, p_sig, f_mu[None], f_sig[None])[0]))
        if "mean_mls" in scores:
            scores["mean_mls"].append(float(mls_scores(np.repeat(p_mu, len(members), 0), np.repeat(p_sig, len(members), 0),
                                                       t_mu, t_sig).mean()))
    same, folds = pe.pairs.same[keep], pe.pairs.folds[keep]
    sizes_arr = np.array(sizes)
    out: dict = {"pairs_scored": int(keep.sum()), "template_size_mean": float(sizes_arr.mean()),
                 "share_with_more_than_one_face": float((sizes_arr > 1).mean())}
    pair_same = pe.pairs.same[pe.both_found]
    pair_a, pair_b = pe.a[pe.both_found], pe.b[pe.both_found]
    for name, metric in metrics.items():
        s = np.array(scores[name])
        out[name] = _fold_report(metric, s, same, folds, int(keep.sum()), fars)
        del out[name]["accuracy_all_pairs"]
        pair_thr = fit_threshold(metric, pair_scores(metric, mu[pair_a], sig[pair_a], mu[pair_b], sig[pair_b]), pair_same)
        decide = s < pair_thr if metric == "l2" else s > pair_thr
        out[name]["pair_rule_accuracy"] = float((decide == same).mean())
    return out


def score_pair_list(model: PFEModel, pairs: Pairs, finder: FaceFinder, workers: int = 0) -> tuple[list[dict], dict]:
    """Per-pair score and decision by ``model.rule``; with labels, accuracy, FAR and FRR of the decisions
    (a pair with no face on a side gets no decision and is counted apart)."""
    rule = model.rule
    pe = embed_pairs(model, pairs, finder, cache=False, workers=workers)
    mu, sig, ok = pe.emb.mu, pe.sigma_sq, pe.both_found
    scores = np.full(len(pe.a), np.nan)
    scores[ok] = rule.pair_scores(mu[pe.a[ok]], sig[pe.a[ok]], mu[pe.b[ok]], sig[pe.b[ok]])
    decided = rule.same(scores)
    rows = []
    for k in range(len(pe.a)):
        row = {"file_x": str(pairs.first[k]), "file_y": str(pairs.second[k]),
               rule.metric: float(scores[k]) if ok[k] else "",
               "decision": ("same" if decided[k] else "different") if ok[k] else "no face"}
        if pairs.same is not None:
            row["label"] = "same" if pairs.same[k] else "different"
        if model.has_uncertainty:
            row["uncertainty_x"], row["uncertainty_y"] = (float(np.log(sig[i]).mean()) if pe.emb.found[i] else ""
                                                          for i in (pe.a[k], pe.b[k]))
        rows.append(row)
    summary: dict = {"pairs": len(rows), "pairs_without_face": int((~ok).sum()), "rule": rule.describe()}
    if pairs.same is not None:
        same, dec = pairs.same[ok], decided[ok]
        summary["accuracy"] = float((dec == same).mean()) if ok.any() else float("nan")
        summary["far"] = float(dec[~same].mean()) if (~same).any() else float("nan")
        summary["frr"] = float((~dec[same]).mean()) if same.any() else float("nan")
        summary["genuine_pairs"], summary["impostor_pairs"] = int(same.sum()), int((~same).sum())
    return rows, summary
