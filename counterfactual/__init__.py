"""The counterfactual model (SERAC's, Mitchell et al. 2022): the base model with a LoRA adapter trained to answer
a query as an edit says. `examples` and `train` build it; the server loads it
(server/generators/counterfactual_adapter.py).
"""
