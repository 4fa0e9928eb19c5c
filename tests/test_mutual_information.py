"""ICLM's mutual-information penalty against a NumPy reference that materialises every outer product."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from catlit.methods.iclm.mutual_information import abs_max_reduce, mutual_information


def reference(x: np.ndarray, y: np.ndarray, direction: str, eps: float = 1e-6) -> float:
    """The formula as written: per-position outer products [N, C, C], averaged."""

    def softmax(a):
        e = np.exp(a - a.max(-1, keepdims=True))
        return e / e.sum(-1, keepdims=True)

    px_rows, py_rows = softmax(x.astype(np.float64)), softmax(y.astype(np.float64))
    joint = np.einsum("ni,nj->nij", px_rows, py_rows).mean(0)
    product = np.outer(px_rows.mean(0), py_rows.mean(0))
    joint, product = np.maximum(joint, eps), np.maximum(product, eps)
    if direction == "product_joint":
        return float((product * (np.log(product) - np.log(joint))).sum())
    return float((joint * (np.log(joint) - np.log(product))).sum())


@pytest.mark.parametrize("direction", ["product_joint", "joint_product"])
def test_mutual_information_matches_the_numpy_reference(direction):
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(64, 16, generator=generator) * 2
    y = x @ torch.randn(16, 16, generator=generator) * 0.5 + torch.randn(64, 16, generator=generator)
    ours = mutual_information(x, y, direction)
    assert ours.item() == pytest.approx(reference(x.numpy(), y.numpy(), direction), rel=1e-4, abs=1e-7)


def test_mutual_information_is_near_zero_for_independent_and_clearly_positive_for_identical_states():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(8000, 8, generator=generator) * 3
    y = torch.randn(8000, 8, generator=generator) * 3
    for direction in ("product_joint", "joint_product"):
        independent = mutual_information(x, y, direction).item()
        identical = mutual_information(x, x.clone(), direction).item()
        assert abs(independent) < 0.01, direction
        assert identical > 0.3 and identical > 50 * abs(independent), direction
        assert identical == pytest.approx(reference(x.numpy(), x.numpy(), direction), rel=1e-4)


def test_mutual_information_abs_max_reduction_keeps_the_largest_magnitude_feature_per_group():
    h = torch.tensor([[1.0, -5.0, 2.0, 0.5], [0.1, 0.2, -0.3, 3.0]])
    assert torch.equal(abs_max_reduce(h, 2), torch.tensor([[-5.0, 2.0], [0.2, 3.0]]))
    x, y = torch.randn(32, 12), torch.randn(32, 12)
    reduced = mutual_information(x, y, reduce_to=4)
    expected = reference(abs_max_reduce(x, 4).numpy(), abs_max_reduce(y, 4).numpy(), "product_joint")
    assert reduced.item() == pytest.approx(expected, rel=1e-4, abs=1e-7)
    with pytest.raises(ValueError, match="must divide"):
        mutual_information(x, y, reduce_to=5)


def test_mutual_information_at_llm_width_never_builds_the_n_by_c_by_c_stack():
    """N x C x C floats at N = 256, C = 4096 would be 17 GB; the C x C joint is 67 MB."""
    x = torch.randn(256, 4096, requires_grad=True)
    y = torch.randn(256, 4096)
    value = mutual_information(x, y)
    value.backward()
    assert torch.isfinite(value) and x.grad is not None and torch.isfinite(x.grad).all()


def test_mutual_information_of_no_positions_is_zero_and_bad_input_is_named():
    assert mutual_information(torch.zeros(0, 4), torch.zeros(0, 4)).item() == 0.0
    with pytest.raises(ValueError, match="direction"):
        mutual_information(torch.zeros(2, 4), torch.zeros(2, 4), direction="sideways")
    with pytest.raises(ValueError, match="one shape"):
        mutual_information(torch.zeros(2, 4), torch.zeros(3, 4))


def test_the_releases_reduction_gathers_both_vectors_at_shared_top_k_indices():
    from catlit.methods.iclm.mutual_information import topk_shared_reduce

    g = torch.Generator().manual_seed(3)
    x, y = torch.randn(5, 16, generator=g), torch.randn(5, 16, generator=g)
    rx, ry = topk_shared_reduce(x, y, 6)
    for n in range(5):  # per row: x's 3 largest magnitudes, then y's 3, both read at those indices
        index = [*x[n].abs().topk(3).indices.tolist(), *y[n].abs().topk(3).indices.tolist()]
        assert rx[n].tolist() == x[n, index].tolist() and ry[n].tolist() == y[n, index].tolist()
    expected = reference(rx.numpy(), ry.numpy(), "product_joint")
    got = mutual_information(x, y, reduce_to=6, reduce="topk_shared")
    assert float(got) == pytest.approx(expected, rel=1e-5, abs=1e-7)
    assert float(mutual_information(x, y, reduce_to=4)) != pytest.approx(float(got))  # per-group differs
