"""Plain values -> ONNX inputs without Arrow gives exactly the tensors of the Arrow conversion (Hypothesis)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from towers.features.schema import FeatureSpec
from towers.onnx.contract import table_to_onnx_inputs, values_to_onnx_inputs

SPECS = (
    FeatureSpec(name="recent", side="query", kind="multi_categorical", max_len=3),
    FeatureSpec(name="genre", side="query", kind="categorical"),
    FeatureSpec(name="count", side="query", kind="numeric"),
)
TYPES = {"recent": pa.list_(pa.string()), "genre": pa.string(), "count": pa.float64()}
text = st.text(max_size=4)
rows = st.integers(min_value=1, max_value=4).flatmap(lambda n: st.fixed_dictionaries({
    "recent": st.lists(st.none() | st.lists(st.none() | text, max_size=5), min_size=n, max_size=n),
    "genre": st.lists(st.none() | text, min_size=n, max_size=n),
    "count": st.lists(st.none() | st.integers(-10**6, 10**6) | st.floats(allow_nan=True, width=64), min_size=n,
                      max_size=n),
}))


def _same(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert a[name].dtype == b[name].dtype and a[name].shape == b[name].shape, name
        if a[name].dtype == np.float32:
            np.testing.assert_array_equal(a[name], b[name])  # NaN in the same places
        else:
            assert a[name].tolist() == b[name].tolist(), name


@settings(max_examples=150, deadline=None)
@given(rows)
def test_plain_values_give_the_arrow_conversion(columns) -> None:
    fast = values_to_onnx_inputs(columns, SPECS)
    assert fast is not None
    table = pa.table({name: pa.array(values, type=TYPES[name], from_pandas=True) for name, values in columns.items()})
    _same(fast, table_to_onnx_inputs(table, SPECS))


def test_a_worked_row() -> None:
    # lists cut to max_len 3 and padded with "", None items -> "", a missing category -> "", a missing number -> NaN
    fast = values_to_onnx_inputs({"recent": [["a", None, "c", "d"], None], "genre": [None, "Drama"], "count": [2, None]},
                                 SPECS)
    assert fast["recent"].tolist() == [["a", "", "c"], ["", "", ""]]
    assert fast["genre"].tolist() == ["", "Drama"]
    assert fast["count"][0] == 2.0 and np.isnan(fast["count"][1]) and fast["count"].dtype == np.float32


def test_other_values_are_left_to_the_arrow_conversion() -> None:
    base = {"recent": [["a"]], "genre": ["x"], "count": [1.0]}
    assert values_to_onnx_inputs({**base, "count": [np.float64(1.0)]}, SPECS) is None  # a numpy scalar
    assert values_to_onnx_inputs({**base, "genre": [3]}, SPECS) is None  # a number where a string is expected
    assert values_to_onnx_inputs({**base, "recent": [np.array(["a"])]}, SPECS) is None
    assert values_to_onnx_inputs({k: v for k, v in base.items() if k != "genre"}, SPECS) is None  # a missing column
    assert values_to_onnx_inputs({**base, "count": [1.0, 2.0]}, SPECS) is None  # unequal lengths
