"""What one ONNX Runtime node costs against one numpy step: `python -m load_tests.onnx_steps`.

Issue 26's first lever for the decision's own cost was to move the per-candidate
arithmetic (the encoding's gathers, the online correction, the priority, the top-k) into
the one ONNX Runtime call, so that one native call replaces dozens of numpy steps. That
pays only if a node inside a session costs clearly less than the numpy step it replaces.
This measures both on the sizes a decision works on: a session of N chained `Add` nodes
over `--rows` float32 values (graph optimisations off, so no node is fused away), fed K
inputs, through the C session the service calls, and one numpy `a + b` of the same size.
docs/benchmarks.md (the decision's own cost) has the latest figures and what they decided.
"""

from __future__ import annotations

import argparse
import functools
import timeit
from collections.abc import Callable

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper


def chain(nodes: int, inputs: int) -> tuple[ort.InferenceSession, str]:
    """A session of `nodes` Adds in a chain, each adding one of `inputs` inputs."""
    feeds = [helper.make_tensor_value_info(f"x{i}", TensorProto.FLOAT, [None]) for i in range(inputs)]
    steps, previous = [], "x0"
    for k in range(nodes):
        steps.append(helper.make_node("Add", [previous, f"x{k % inputs}"], [f"y{k}"]))
        previous = f"y{k}"
    graph = helper.make_graph(steps, "chain", feeds,
                              [helper.make_tensor_value_info(previous, TensorProto.FLOAT, [None])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(model.SerializeToString(), options,
                                providers=["CPUExecutionProvider"]), previous


def best_us(call: Callable[[], object], number: int, repeat: int) -> float:
    """The least of `repeat` timings of `number` calls, in microseconds per call."""
    return min(timeit.repeat(call, number=number, repeat=repeat)) / number * 1e6


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=30, help="values per tensor (candidates)")
    parser.add_argument("--number", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    options = ort.RunOptions()
    for nodes, inputs in ((1, 1), (10, 1), (40, 1), (40, 8)):
        session, output = chain(nodes, inputs)
        feed = {f"x{i}": rng.random(args.rows, dtype=np.float32) for i in range(inputs)}
        run = functools.partial(session._sess.run, [output], feed, options)  # the C session
        us = best_us(run, args.number, args.repeat)
        print(f"session of {nodes:2d} nodes, {inputs} inputs: {us:6.2f} us per call")
    a, b = rng.random(args.rows, dtype=np.float32), rng.random(args.rows, dtype=np.float32)
    print(f"numpy a + b over {args.rows} values:      "
          f"{best_us(lambda: a + b, args.number * 10, args.repeat):6.2f} us per step")


if __name__ == "__main__":
    main()
