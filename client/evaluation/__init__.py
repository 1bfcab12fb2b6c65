"""The evaluation harness over gRPC: `runner` runs benchmark cases (read by `editdata`) against a server through
the client and scores them, `report` aggregates, `cli` is `scripts/evaluate.py` and `editctl eval`."""
