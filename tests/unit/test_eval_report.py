from dataclasses import replace

from client.evaluation.report import headline, markdown_table, summarize
from client.evaluation.runner import CaseResult, ProbeResult


def probe(category: str, em: bool, tf: float, route: str) -> ProbeResult:
    return ProbeResult(category, "p", "a", em, tf, route, None if route == "base" else "e", 0.5, 10.0, "t")


def test_summary_counts_gate_errors_and_leaves_absent_metrics_none() -> None:
    results = [
        CaseResult("1", ["e"], [probe("reliability", True, 1.0, "prompt"), probe("generalization", False, 0.5, "base"),
                                probe("locality", True, 1.0, "base")]),
        CaseResult("2", ["f"], [probe("reliability", False, 0.0, "base"), probe("generalization", True, 1.0, "prompt"),
                                probe("locality", False, 0.5, "prompt")]),
    ]
    s = summarize(results, "gate", 3.0)
    assert s["reliability_em"] == 0.5 and s["generalization_tf"] == 0.75 and s["locality_tf"] == 0.75
    assert s["portability_em"] is None and s["fluency"] is None
    assert s["gate_false_negative_rate"] == 0.5  # 2 of 4 reliability/generalization probes went to base
    assert s["gate_false_positive_rate"] == 0.5  # 1 of 2 locality probes went in scope
    assert s["routes"]["locality"] == {"base": 1, "prompt": 1}
    assert set(headline(s)) >= {"n", "method", "reliability_em", "portability_tf", "seconds"}
    table = markdown_table(s)
    assert "| reliability | 0.500 | 0.500 |" in table and "portability" not in table


def test_locality_is_also_reported_without_probes_that_ask_an_edited_fact() -> None:
    shared = replace(probe("locality", False, 0.0, "prompt"), asks_other_edit=True)
    same_relation = replace(probe("same_subject", False, 0.0, "counterfactual"), asks_own_edit=True)
    results = [CaseResult("1", ["e"], [probe("locality", True, 1.0, "base"), shared, same_relation]),
               CaseResult("2", ["f"], [probe("locality", False, 0.5, "prompt"),
                                       probe("same_subject", True, 1.0, "base")])]
    s = summarize(results, "gate", 1.0)
    assert s["locality_em"] == 1 / 3 and s["locality_asks_other_edit"] == 1 and s["locality_asks_own_edit"] == 0
    assert s["locality_em_excl_edited_facts"] == 0.5 and s["locality_tf_excl_edited_facts"] == 0.75
    assert s["same_subject_em"] == 0.5 and s["same_subject_asks_own_edit"] == 1
    assert s["same_subject_em_excl_edited_facts"] == 1.0
    assert headline(s)["locality_em_excl_edited_facts"] == 0.5
    assert headline(s)["same_subject_em_excl_edited_facts"] == 1.0
    table = markdown_table(s)
    assert ("| locality without the 1 probes asking an edited fact (1 another edit's, 0 their own edit's) "
            "| 0.500 | 0.750 |") in table
    assert ("| same_subject without the 1 probes asking an edited fact (0 another edit's, 1 their own edit's) "
            "| 1.000 | 1.000 |") in table
    assert "object_neighbourhood without" not in table


def test_portability_and_reverse_are_reported_by_kind_with_their_routes() -> None:
    alias = replace(probe("portability", True, 1.0, "counterfactual"), kind="alias")
    missed_alias = replace(probe("portability", False, 0.25, "base"), kind="alias")
    logical = replace(probe("portability", False, 0.5, "counterfactual"), kind="logical")
    reverse = probe("reverse", False, 0.0, "base")
    results = [CaseResult("1", ["e"], [alias, logical, reverse]), CaseResult("2", ["f"], [missed_alias])]
    s = summarize(results, "gate", 1.0)
    assert list(s["kinds"]) == ["alias", "logical", "reverse"]  # reasoning has no probes here
    assert s["kinds"]["alias"] == {"n": 2, "em": 0.5, "tf": 0.625, "routes": {"counterfactual": 1, "base": 1}}
    assert s["kinds"]["reverse"] == {"n": 1, "em": 0.0, "tf": 0.0, "routes": {"base": 1}}
    assert s["portability_em"] == 1 / 3  # the figure over all kinds stays
    table = markdown_table(s)
    assert "| alias | 2 | 0.500 | 0.625 | base: 1, counterfactual: 1 |" in table
    assert "| logical | 1 | 0.000 | 0.500 | counterfactual: 1 |" in table


def test_object_neighbourhood_is_a_locality_family_whose_gate_errors_are_counted_apart() -> None:
    results = [CaseResult("1", ["e"], [probe("object_neighbourhood", True, 1.0, "base"),
                                       probe("object_neighbourhood", False, 0.5, "counterfactual")])]
    s = summarize(results, "gate", 1.0)
    assert s["object_neighbourhood_em"] == 0.5 and s["object_neighbourhood_tf"] == 0.75
    assert s["gate_false_positive_rate"] is None  # locality and same-subject only, as before the new family
    assert s["gate_false_positive_rate_object_neighbourhood"] == 0.5
    assert headline(s)["object_neighbourhood_em"] == 0.5
    assert "| object_neighbourhood | 0.500 | 0.750 |" in markdown_table(s)
    assert s["kinds"] == {}
