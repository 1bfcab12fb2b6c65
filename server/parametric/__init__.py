"""Parametric editing: methods that write edits into the served model's weights, or into state beside them.

    method       the protocol a method follows (name, default layers, check, stepwise deltas) and its context
    registry     every method by name; a new method is one module and one line there
    rome         ROME: one edit as a rank-one update of one MLP down-projection
    memit        MEMIT: many edits spread over a range of layers
    alphaedit    AlphaEdit: MEMIT with each update projected onto the null space of the preserved keys
    ft           FT-L: constrained fine-tuning of one layer, the baseline
    grace        GRACE: a codebook beside one MLP layer, one entry per edit, acting within a deferral radius
    kn           KN: knowledge neurons found by integrated gradients, their value vectors moved to the new answer
    tpatcher     T-Patcher: a trained neuron per answer token beside an FFN, firing on the edit's inputs only
    calinet      CaliNET: a few calibration slots per edit beside an FFN (T-Patcher's neurons, trained as the paper)
    wise         WISE: a side memory beside one MLP (edited in shards, merged), chosen per position by a router
    mend         MEND: a trained editor network maps the edit's gradient at the last MLPs to their update
    ke           KE: MEND's predecessor, an editor network conditioned on the edit's tokens re-weights that gradient
    memory_subjects  real subjects asked each question of a training file, for T-Patcher's memory (shipped table)
    layers       the layers each kind of method edits by default, per model
    prompts      the token batches an edit is computed from (prefixed prompts, subject and answer positions)
    targets      an edit's key and the output change that makes the model say the new answer
    wordings     other wordings of an edit's question, mined from a training file
    tap          forward hooks: read a module's input and output, add a vector to its output
    prefixes     short texts the model generates itself, to average keys and values over contexts
    stats        the second moment C = E[k kᵀ] of an MLP's keys, from offline text
    stats_cache  C per model and layer, computed once and kept on disk
    deltas       weight deltas as stored records, applied in a fixed order so replays are bit-exact
    additions    state an edit attaches beside a module (GRACE's entries, T-Patcher's neurons), rebuilt in order
    ledger       the durable record of applied deltas (SQLite)
    editor       computes with a method, applies, replays at start, rolls back; the one place that writes weights
    export       writes the edited model as a Hugging Face directory
"""
