"""Where the benchmark data is read from unless a caller passes another path: ../shared/data beside the repository
(its README.md says what each file is). The one place that default is worked out."""

from pathlib import Path

DATA_DIR = Path(__file__).resolve().parents[2] / "shared" / "data"
# CounterFact's train split: the IKE demonstrations, other wordings and covariance text the server defaults to.
COUNTERFACT_TRAIN = DATA_DIR / "counterfact" / "train.json"
