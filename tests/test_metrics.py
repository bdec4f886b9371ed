"""ACC (Hungarian matching), NMI and ARI."""

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

from varclust import cluster_accuracy, clustering_scores
from varclust.metrics import hungarian_mapping


def test_permuted_labelling_is_perfect():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 5, size=200)
    perm = np.array([3, 0, 4, 1, 2])
    assert cluster_accuracy(y, perm[y]) == 1.0
    # the map found undoes the permutation
    mapping = hungarian_mapping(y, perm[y])
    assert all(mapping[int(perm[c])] == c for c in range(5))


def test_hand_counted_example():
    # confusion (cluster rows, class columns):
    #   cluster 0: class0 x3, class1 x1
    #   cluster 1: class1 x2, class2 x1
    #   cluster 2: class2 x2, class0 x1
    y_true = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2, 0])
    y_pred = np.array([0, 0, 0, 0, 1, 1, 1, 2, 2, 2])
    # best matching 0->0 (3), 1->1 (2), 2->2 (2): 7 of 10
    assert cluster_accuracy(y_true, y_pred) == pytest.approx(0.7)
    # relabelling the clusters changes nothing
    assert cluster_accuracy(y_true, (y_pred + 1) % 3) == pytest.approx(0.7)


def test_hand_counted_example_needs_non_greedy_matching():
    #   cluster 0: class0 x3, class1 x3;  cluster 1: class0 x2, class1 x0
    # a greedy match may take cluster 0 -> class 0 (tie at 3) and get 3/8; the optimum is 5/8
    y_true = np.array([0, 0, 0, 1, 1, 1, 0, 0])
    y_pred = np.array([0, 0, 0, 0, 0, 0, 1, 1])
    # 0->0 and 1->1: 3 + 0 = 3;  0->1 and 1->0: 3 + 2 = 5
    assert cluster_accuracy(y_true, y_pred) == pytest.approx(5 / 8)


def test_more_clusters_than_classes():
    y_true = np.array([0, 0, 1, 1])
    y_pred = np.array([0, 1, 2, 3])  # K = 4 > 2 classes: only two clusters can be matched
    assert cluster_accuracy(y_true, y_pred) == pytest.approx(0.5)
    y_true = np.array([0, 0, 0, 1, 1, 1])
    y_pred = np.array([5, 5, 7, 9, 9, 9])  # arbitrary cluster ids
    assert cluster_accuracy(y_true, y_pred) == pytest.approx(5 / 6)


def test_fewer_clusters_than_classes():
    y_true = np.array([0, 1, 2, 0, 1, 2])
    y_pred = np.zeros(6, dtype=int)  # one cluster for three classes
    assert cluster_accuracy(y_true, y_pred) == pytest.approx(2 / 6)
    y_true = np.array([0, 0, 1, 1, 2, 2])
    y_pred = np.array([0, 0, 1, 1, 1, 1])
    assert cluster_accuracy(y_true, y_pred) == pytest.approx(4 / 6)


def test_length_mismatch_is_an_error():
    with pytest.raises(ValueError, match="3 labels but y_pred has 2"):
        cluster_accuracy([0, 1, 2], [0, 1])


def test_non_integer_labels_are_an_error():
    with pytest.raises(ValueError, match="integer labels.*float"):
        cluster_accuracy(np.array([0.0, 1.0]), np.array([0, 1]))
    with pytest.raises(ValueError, match="y_pred must hold integer labels"):
        cluster_accuracy(np.array([0, 1]), np.array(["a", "b"]))


def test_two_dimensional_labels_are_an_error():
    with pytest.raises(ValueError, match="y_true must be a 1-D array.*\\(2, 2\\)"):
        cluster_accuracy(np.array([[0, 1], [1, 0]]), np.array([0, 1, 1, 0]))
    with pytest.raises(ValueError, match="y_pred must be a 1-D"):
        clustering_scores(np.array([0, 1]), np.array([[0], [1]]))


def test_empty_labelling_is_an_error():
    with pytest.raises(ValueError, match="empty"):
        cluster_accuracy(np.array([], dtype=int), np.array([], dtype=int))


def test_clustering_scores_agree_with_sklearn():
    rng = np.random.default_rng(1)
    y_true = rng.integers(0, 4, size=300)
    y_pred = np.where(rng.random(300) < 0.7, y_true, rng.integers(0, 5, size=300))
    scores = clustering_scores(y_true, y_pred)
    assert set(scores) == {"acc", "nmi", "ari"}
    assert all(isinstance(v, float) for v in scores.values())
    assert scores["acc"] == pytest.approx(cluster_accuracy(y_true, y_pred))
    assert scores["nmi"] == pytest.approx(normalized_mutual_info_score(y_true, y_pred))
    assert scores["ari"] == pytest.approx(adjusted_rand_score(y_true, y_pred))
    assert 0.5 < scores["acc"] < 1.0  # noisy but far above chance


def test_clustering_scores_perfect_and_length_checked():
    y = np.array([0, 0, 1, 1, 2, 2])
    assert clustering_scores(y, (y + 1) % 3) == pytest.approx({"acc": 1.0, "nmi": 1.0, "ari": 1.0})
    with pytest.raises(ValueError, match="labels but y_pred has"):
        clustering_scores(y, y[:-1])
