"""alexnet.evaluate.evaluate's top-1 / top-5 error and loss against cases worked out by hand.

evaluate() takes a Predictor (only its probs(images, crops) is used) and a loader (batches of
(images, labels), and len()); here the "images" are the probabilities themselves."""
from __future__ import annotations

import math
import re
from types import SimpleNamespace

import pytest
import torch

from alexnet.errors import DataError
from alexnet.evaluate import evaluate
from alexnet.predictor import Predictor


class GivenProbs:
    """A Predictor whose probabilities are the batch it is handed."""

    def __init__(self):
        self.crops = []

    def probs(self, images, crops=1):
        self.crops.append(crops)
        return images


def batches(rows, labels, split):
    """(probabilities, labels) in batches of the sizes in `split`: the sums must run over all."""
    probs, labels = torch.tensor(rows, dtype=torch.float32), torch.tensor(labels)
    out, start = [], 0
    for n in split:
        out.append((probs[start:start + n], labels[start:start + n]))
        start += n
    assert start == len(labels)
    return out


# 7 classes, so that top-5 leaves two out. Each row is one image's probabilities (summing to 1);
# the label's rank is 1 for the most probable class.
#
#   image  label  p(label)  rank of the label              top-1  top-5
#   A      0      0.40      1                               hit    hit
#   B      3      0.10      4                               miss   hit
#   C      4      0.08      5  (the last place in the top 5) miss   hit
#   D      5      0.05      6  (the first place outside)     miss   miss
#   E      6      0.02      7                               miss   miss
#   F      2      0.25      2  (tied with class 3 at 0.25)   miss   hit
#   G      1      0.50      1  (classes 5 and 6 tie at 0.01) hit    hit
#
# F's tie (with the label at ranks 2-3) and G's (at ranks 6-7) lie inside one side of each
# boundary: whole hits or misses. Ties across a boundary: test_ties_across_the_boundary_*.
#
# top-1: A and G hit            -> 2 of 7 correct -> error 5/7
# top-5: A, B, C, F and G hit   -> 5 of 7 correct -> error 2/7
# loss: the mean of -ln p(label) over the 7 images:
#   -ln 0.40 = 0.916291   -ln 0.10 = 2.302585   -ln 0.08 = 2.525729   -ln 0.05 = 2.995732
#   -ln 0.02 = 3.912023   -ln 0.25 = 1.386294   -ln 0.50 = 0.693147
#   sum 14.731801 / 7 = 2.104543
ROWS = [
    [0.40, 0.20, 0.15, 0.10, 0.08, 0.05, 0.02],  # A
    [0.30, 0.25, 0.20, 0.10, 0.08, 0.05, 0.02],  # B
    [0.30, 0.25, 0.20, 0.10, 0.08, 0.05, 0.02],  # C
    [0.30, 0.25, 0.20, 0.10, 0.08, 0.05, 0.02],  # D
    [0.30, 0.25, 0.20, 0.10, 0.08, 0.05, 0.02],  # E
    [0.30, 0.10, 0.25, 0.25, 0.06, 0.03, 0.01],  # F
    [0.20, 0.50, 0.12, 0.10, 0.06, 0.01, 0.01],  # G
]
LABELS = [0, 3, 4, 5, 6, 2, 1]


@pytest.mark.parametrize("split", [[7], [3, 4], [1, 1, 1, 1, 1, 1, 1]], ids=["1", "2", "7"])
def test_top1_top5_and_loss_by_hand(split):
    assert all(math.isclose(sum(r), 1.0, abs_tol=1e-9) for r in ROWS)
    predictor = GivenProbs()
    result = evaluate(predictor, batches(ROWS, LABELS, split), crops=10)
    assert result["images"] == 7 and result["crops"] == 10
    assert predictor.crops == [10] * len(split)  # the crops asked for reach the predictor
    assert result["top1_error"] == pytest.approx(5 / 7, abs=1e-12)
    assert result["top5_error"] == pytest.approx(2 / 7, abs=1e-12)
    assert result["loss"] == pytest.approx(14.731801 / 7, abs=1e-6)


def test_fewer_than_five_classes_make_top5_all_of_them():
    # 3 classes: the "top 5" holds every class, so every image is a top-5 hit.
    #   label 0, probs (0.7, 0.2, 0.1): top-1 hit;  label 2, probs (0.6, 0.3, 0.1): top-1 miss
    #   top-1 error 1/2, top-5 error 0; loss (-ln 0.7 - ln 0.1) / 2 = (0.356675 + 2.302585) / 2
    result = evaluate(GivenProbs(), batches([[0.7, 0.2, 0.1], [0.6, 0.3, 0.1]], [0, 2], [2]))
    assert result["top1_error"] == pytest.approx(0.5) and result["top5_error"] == 0.0
    assert result["loss"] == pytest.approx((0.356675 + 2.302585) / 2, abs=1e-6)


def test_a_zero_probability_is_a_finite_loss():
    # p(label) = 0 (an underflowed softmax) is clamped to 1e-12: loss -ln 1e-12 = 27.631021,
    # not inf, which the NaN guard of training would take for divergence.
    result = evaluate(GivenProbs(), batches([[1.0, 0.0]], [1], [1]))
    assert result["loss"] == pytest.approx(27.631021, abs=1e-5)  # float32 log
    assert result["top1_error"] == 1.0 and result["top5_error"] == 0.0


def test_ties_across_the_boundary_score_what_chance_does():
    """A label tied with others across the k-th place scores the chance that a random order of
    the tie puts it inside (evaluate.top_k_hits); torch.topk's order (unspecified) decided it.
    7 classes:
      uniform 1/7 each, label 3: top-1 hit 1/7, top-5 hit 5/7 (a dead net scores chance)
      (0.4, 0.4, 0.05 ×4, 0), label 1: 0 above, 2 tied: top-1 hit 1/2; top-5 hit 1
      (0.5, 0, 0.1 ×5), label 6: 1 above, 5 tied: top-1 0, top-5 hit (5 - 1) / 5 = 4/5
    top-1 error 1 - (1/7 + 1/2 + 0) / 3;  top-5 error 1 - (5/7 + 1 + 4/5) / 3"""
    rows = [[1 / 7] * 7,
            [0.4, 0.4, 0.05, 0.05, 0.05, 0.05, 0.0],
            [0.5, 0.0, 0.1, 0.1, 0.1, 0.1, 0.1]]
    result = evaluate(GivenProbs(), batches(rows, [3, 1, 6], [3]))
    assert result["top1_error"] == pytest.approx(1 - (1 / 7 + 1 / 2 + 0) / 3, abs=1e-12)
    assert result["top5_error"] == pytest.approx(1 - (5 / 7 + 1 + 4 / 5) / 3, abs=1e-12)


def test_a_nan_probability_is_a_miss():
    result = evaluate(GivenProbs(), batches([[float("nan"), 0.5, 0.5]], [0], [1]))
    assert result["top1_error"] == 1.0 and result["top5_error"] == 1.0


def test_a_label_map_scores_the_datas_classes_by_the_models_names():
    """The same images as the hand-worked table, their data labels in reversed class order
    (a dataset that lists the classes the other way round): the map gives the table's result."""
    reversed_labels = [6 - label for label in LABELS]
    result = evaluate(GivenProbs(), batches(ROWS, reversed_labels, [3, 4]),
                      label_map=torch.arange(6, -1, -1))
    assert result["top1_error"] == pytest.approx(5 / 7, abs=1e-12)
    assert result["top5_error"] == pytest.approx(2 / 7, abs=1e-12)
    assert result["loss"] == pytest.approx(14.731801 / 7, abs=1e-6)


@pytest.mark.parametrize("data, want", [
    (["a", "b", "c"], (None, None)),
    (["b"], ([1], None)),                                   # a val folder of one class: by name
    (["c", "a"], ([2, 0], None)),                           # another order: by name
    (["x", "y", "z"], (None, "the data's classes are not the model's (e.g. 'x')")),
    (["x"], "the model has 3 classes but the data has 1, not all of them the model's (e.g. 'x')"),
])
def test_the_label_map_by_class_name(data, want):
    """A dataset of other names but as many was scored by position unsaid; one of fewer classes
    was refused even when the model knew all of them."""
    model = SimpleNamespace(classes=["a", "b", "c"])
    if isinstance(want, str):
        with pytest.raises(DataError, match=re.escape(want)):
            Predictor.label_map(model, SimpleNamespace(classes=data))
        return
    got, note = Predictor.label_map(model, SimpleNamespace(classes=data))
    assert (got if got is None else got.tolist()) == want[0]
    assert note == want[1] or want[1] in note


def test_a_model_without_names_of_its_own_is_matched_by_position():
    """Converted weights name their classes "0", "1", … or with torchvision's ImageNet words, in
    the order of the sorted WordNet IDs: an ImageNet folder (named by WordNet ID) is theirs."""
    model = SimpleNamespace(classes=["0", "1", "2"])
    assert Predictor.label_map(model, SimpleNamespace(classes=["n1", "n2", "n3"])) == (None, None)
