"""The sentence encoder's batched pass: batches are formed by length, answers come back in the callers' order."""

from __future__ import annotations

import numpy as np

from server.memory.embed import SentenceEncoder


def test_encode_texts_keeps_the_callers_order_and_equals_one_at_a_time() -> None:
    encoder = SentenceEncoder("all-MiniLM-L6-v2")
    texts = ["The Space Needle is located in the city of", "a", "Paris is", "x y z w v u t s r q p o n m"] * 3
    batched = encoder.encode_texts(texts, batch_size=3)  # the short texts share batches, out of order
    for text, encoded in zip(texts, batched, strict=True):
        alone = encoder.encode_text(text)
        assert encoded.text == text and encoded.token_spans == alone.token_spans
        np.testing.assert_allclose(encoded.vector, alone.vector, atol=1e-5)
        np.testing.assert_allclose(encoded.token_vectors, alone.token_vectors, atol=1e-4)
    np.testing.assert_allclose(encoder.encode(texts), np.stack([e.vector for e in batched]), atol=1e-5)
