"""Knowledge clusters of the pool: tag strings, or K-Means over their MiniLM embeddings."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["problem_categories"]


def problem_categories(
    problems: Sequence[Any],
    *,
    tags: Mapping[str, Sequence[str]] | None = None,
    use_embeddings: bool = False,
    n_clusters: int = 8,
    seed: int = 0,
) -> list[str]:
    """Knowledge cluster of each problem, for the strategy's `category`.

    Without embeddings a problem's cluster is its tag string ("; ".join(tags), or its
    source when untagged): problems sharing exactly the same knowledge points cluster
    together. With embeddings the distinct tag strings are embedded with MiniLM and
    grouped by K-Means into min(n_clusters, #distinct) clusters (SAI-DPO's recipe).

    Args:
        problems: the pool.
        tags: `{problem.id: tags}` replacing `MathProblem.tags` (e.g. from
            `agents.knowledge_tags.tag_problems`); must cover every problem.
        use_embeddings: cluster the tag strings with MiniLM + K-Means.
        n_clusters: K-Means clusters (capped at the distinct tag strings).
        seed: K-Means seed.

    Returns:
        One label per problem (`"cluster:<id>"` with embeddings).
    """
    if tags is not None:
        missing = [p.id for p in problems if p.id not in tags]
        if missing:
            raise ValueError(
                f"expected tags for every problem, got none for {len(missing)} "
                f"(first: {missing[0]!r})"
            )
    texts = []
    for p in problems:
        ts = p.tags if tags is None else tags[p.id]
        texts.append("; ".join(ts) if ts else (p.source or "untagged"))
    if not use_embeddings:
        return texts
    from lppo_sampling.clustering import cluster_tags

    distinct = list(dict.fromkeys(texts))
    labels = cluster_tags(distinct, min(n_clusters, len(distinct)), seed)
    of = dict(zip(distinct, labels.tolist(), strict=True))
    return [f"cluster:{of[t]}" for t in texts]
