"""Benchmark data, neutral to who uses it: `readers` turns CounterFact, zsRE, KnowEdit and MQuAKE files into
`cases`, `metrics` scores answers, `paths` says where the data lives by default.

Standard library only, and nothing from server/, client/ or the training packages: evaluation over gRPC,
training and import tools all read the same cases, and a harness can score without loading a model.
"""
