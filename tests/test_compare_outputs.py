"""tools/compare_outputs.py: the bit-for-bit comparison of two runs' arrays."""

import numpy as np

from tools.compare_outputs import compare


def test_compare_names_each_array_that_differs(tmp_path):
    base = {"a_offsets": np.zeros((3, 4, 3), np.float32), "a_wrinkles": np.ones((3, 2, 2, 3), np.float16)}
    np.savez(tmp_path / "reference.npz", **base)
    np.savez(tmp_path / "same.npz", **base)
    assert compare(tmp_path / "reference.npz", tmp_path / "same.npz") == []

    changed = dict(base)
    changed["a_offsets"] = base["a_offsets"].copy()
    changed["a_offsets"][1, 2, 0] = np.float32(1e-7)  # one ulp-sized change is a difference
    np.savez(tmp_path / "changed.npz", **changed)
    assert compare(tmp_path / "reference.npz", tmp_path / "changed.npz") == ["a_offsets: differs (largest difference 1e-07)"]

    np.savez(tmp_path / "other.npz", a_offsets=base["a_offsets"].astype(np.float64), extra=np.zeros(1))
    messages = compare(tmp_path / "reference.npz", tmp_path / "other.npz")
    assert any(m.startswith("a_offsets: float32") for m in messages)
    assert "a_wrinkles: only in one run" in messages and "extra: only in one run" in messages
