"""A logit output for exported tree ensembles: the service scores in logits.

skl2onnx exports a binary gradient-boosted model as one `TreeEnsembleClassifier` with a
LOGISTIC post-transform and a `label` output. The service wants the raw margin (the
logit): the online correction is added to it, and only then does a sigmoid give the
propensity. `with_logit_output` rewrites such a graph into a `TreeEnsembleRegressor`
over the same trees, outputting `logit` [n, 1], with `probabilities` [n, 2] computed
from it by a sigmoid for everything that reads probabilities. Fetching `logit` alone
runs the trees and nothing else (no post-transform, no label), and no
`log(p) - log(1 - p)` on the way back (the score step's CPU: the `score` layer of
`nextbest bench --breakdown`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

LOGIT_NAME = "logit"

_TREE_ATTRIBUTES = (
    "nodes_falsenodeids", "nodes_featureids", "nodes_hitrates", "nodes_missing_value_tracks_true",
    "nodes_modes", "nodes_nodeids", "nodes_treeids", "nodes_truenodeids", "nodes_values",
)


def with_logit_output(model: Any, input_name: str, probabilities_name: str) -> Any | None:
    """The rewritten model, or None when the graph is not a binary logistic tree ensemble."""
    from onnx import helper

    trees = [n for n in model.graph.node if n.op_type == "TreeEnsembleClassifier"]
    if len(trees) != 1:
        return None
    attrs = {a.name: helper.get_attribute_value(a) for a in trees[0].attribute}
    if (attrs.get("post_transform") != b"LOGISTIC" or list(attrs.get("classlabels_int64s", [])) != [0, 1]
            or set(attrs["class_ids"]) != {0} or len(attrs.get("base_values", [0.0])) != 1):
        return None
    tree: dict[str, Any] = {k: list(attrs[k]) for k in _TREE_ATTRIBUTES if k in attrs}
    regressor = helper.make_node(
        "TreeEnsembleRegressor", [input_name], [LOGIT_NAME], domain="ai.onnx.ml",
        n_targets=1, post_transform="NONE", aggregate_function="SUM",
        base_values=list(attrs.get("base_values", [0.0])),
        target_ids=list(attrs["class_ids"]), target_nodeids=list(attrs["class_nodeids"]),
        target_treeids=list(attrs["class_treeids"]), target_weights=list(attrs["class_weights"]),
        **tree,
    )
    n_columns = model.graph.input[0].type.tensor_type.shape.dim[1].dim_value
    return logit_model(
        [regressor], [], input_name, n_columns, probabilities_name,
        opsets={"": 17, "ai.onnx.ml": 3}, ir_version=model.ir_version,
    )


def logit_model(
    nodes: list[Any], initializers: list[Any], input_name: str, n_columns: int,
    probabilities_name: str, opsets: dict[str, int], ir_version: int,
    graph_name: str = "nextbest_ranker",
) -> Any:
    """A checked model from `nodes` that compute `LOGIT_NAME` [n, 1] from `input_name`,
    with `probabilities_name` [n, 2] = (1 - sigmoid, sigmoid) of it added."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes = [
        *nodes,
        helper.make_node("Sigmoid", [LOGIT_NAME], ["p_accept"]),
        helper.make_node("Sub", ["one", "p_accept"], ["p_refuse"]),
        helper.make_node("Concat", ["p_refuse", "p_accept"], [probabilities_name], axis=1),
    ]
    graph = helper.make_graph(
        nodes, graph_name,
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, [None, n_columns])],
        [helper.make_tensor_value_info(probabilities_name, TensorProto.FLOAT, [None, 2]),
         helper.make_tensor_value_info(LOGIT_NAME, TensorProto.FLOAT, [None, 1])],
        initializer=[*initializers,
                     numpy_helper.from_array(np.ones((1, 1), dtype=np.float32), "one")],
    )
    out = helper.make_model(
        graph, opset_imports=[helper.make_opsetid(domain, v) for domain, v in opsets.items()],
        producer_name="nextbest",
    )
    out.ir_version = ir_version
    onnx.checker.check_model(out)
    return out
