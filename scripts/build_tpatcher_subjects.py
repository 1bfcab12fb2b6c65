#!/usr/bin/env python
"""Writes artifacts/tpatcher/subjects.json: the subjects a CounterFact training file asks each prompt template
about, from which T-Patcher draws its memory's subjects (server/parametric/memory_subjects.py). Reads a train
file only: validation and dev subjects must not be in the shipped table.

    scripts/build_tpatcher_subjects.py    # from ../shared/data/counterfact/train.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from editdata.paths import COUNTERFACT_TRAIN  # noqa: E402
from server.parametric.memory_subjects import DEFAULT_FILE, SubjectTable  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=COUNTERFACT_TRAIN)
    parser.add_argument("--out", type=Path, default=DEFAULT_FILE)
    args = parser.parse_args()
    if "train" not in args.data.name:
        parser.error("build the table from a train file, never from validation or dev data")
    table = SubjectTable.from_records(json.loads(args.data.read_text()))
    table.save(args.out, f"{args.data.parent.name}/{args.data.name}")
    subjects = {s for group in table.by_template.values() for s in group}
    print(f"{args.out}: {len(table.by_template)} templates, {len(subjects)} distinct subjects")


if __name__ == "__main__":
    main()
