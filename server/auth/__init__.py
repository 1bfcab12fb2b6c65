"""Who may call what: bearer tokens (tokens.py) checked per RPC (authorizer.py), the refusal to serve an open
network without them (exposure.py), and `python -m server.auth add` (cli.py)."""
