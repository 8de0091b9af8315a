"""The ONNX Runtime step measurement builds the sessions it times, and they compute."""

from __future__ import annotations

import numpy as np
import pytest

from load_tests.onnx_steps import chain, main


def test_a_chain_of_adds_adds_its_inputs_in_turn() -> None:
    session, output = chain(nodes=5, inputs=2)
    x0, x1 = np.arange(3, dtype=np.float32), np.full(3, 10, dtype=np.float32)
    (y,) = session.run([output], {"x0": x0, "x1": x1})
    # ((((x0 + x0) + x1) + x0) + x1) + x0: node k adds input k % 2 to the chain
    np.testing.assert_allclose(y, 4 * x0 + 2 * x1)


def test_the_measurement_prints_every_session_and_the_numpy_step(capsys: pytest.CaptureFixture[str]) -> None:
    main(["--number", "20", "--repeat", "1"])
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in lines] == [
        "session of  1 nodes, 1 inputs", "session of 10 nodes, 1 inputs",
        "session of 40 nodes, 1 inputs", "session of 40 nodes, 8 inputs",
        "numpy a + b over 30 values"]
    assert all(float(line.split(":")[1].split()[0]) > 0 for line in lines)
