"""Chat with corrections: conversations rendered for the model, gated per turn, and free-text corrections read
into edits of the caller's namespace."""
