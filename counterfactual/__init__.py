"""The counterfactual model (SERAC's, Mitchell et al. 2022): the base model with a LoRA adapter trained to answer
a query as an edit says. `artifact` is the only part the server imports; `examples` and `train` build it.
"""
