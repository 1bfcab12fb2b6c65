#!/usr/bin/env python
"""Evaluate an editing method on a benchmark file; see `--help` and docs/BENCHMARKS.md."""

import sys

from client.evaluation.cli import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
