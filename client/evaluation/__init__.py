"""The pure parts of the evaluation harness: benchmark readers (`cases`) and scoring functions (`metrics`).

Standard library only: nothing here imports torch, transformers, faiss, numpy or `server/`, so a
harness that talks to the server over gRPC can score without loading a model.
"""

from client.evaluation.cases import (
    FORMATS,
    BlankEditFieldError,
    Case,
    EditFact,
    Probe,
    detect_format,
    load_cases,
    parse_records,
)
from client.evaluation.metrics import (
    agreement,
    exact_match,
    mean_or_none,
    ngram_entropy,
    normalise,
    percentile,
    token_accuracy,
)

__all__ = [
    "FORMATS",
    "BlankEditFieldError",
    "Case",
    "EditFact",
    "Probe",
    "agreement",
    "detect_format",
    "exact_match",
    "load_cases",
    "mean_or_none",
    "ngram_entropy",
    "normalise",
    "parse_records",
    "percentile",
    "token_accuracy",
]
