"""Gates: score how likely a query falls in the scope of each retrieved edit.

`similarity` is the untrained baseline; `classifier` is the trained scope classifier, reading pair `features`
through the network an `artifact` holds (`interaction` is its token-level design). Training and evaluating it
is scope_classifier/'s job, which imports from here.
"""
