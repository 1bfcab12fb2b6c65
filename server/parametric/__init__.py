"""Parametric editing: locate-then-edit methods that write edits into the served model's weights.

    prompts    the token batches an edit is computed from (prefixed prompts, subject and answer positions)
    tap        forward hooks: read a module's input and output, add a vector to its output
    prefixes   short texts the model generates itself, to average keys and values over contexts
    stats      the second moment C = E[k kᵀ] of an MLP's keys, from offline text, cached per model and layer
    rome       ROME: one edit as a rank-one update of one MLP down-projection
    memit      MEMIT: many edits spread over a range of layers
    ft         FT-L: constrained fine-tuning of one layer, the baseline
    deltas     weight deltas as stored records, applied in a fixed order so replays are bit-exact
    ledger     the durable record of applied deltas (SQLite)
    editor     applies, replays at start, rolls back and exports; the one place that writes weights
"""
