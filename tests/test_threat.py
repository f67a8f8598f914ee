"""Property tests of the threat model's projection and containment check."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.api.threat import Norm, ThreatModel


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), eps=st.floats(0.0, 2.0), norm=st.sampled_from(list(Norm)),
       scale=st.floats(0.0, 5.0))
def test_projection_lands_in_the_ball_and_box_and_is_idempotent(seed, eps, norm, scale):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand((4, 3, 5, 5), generator=g)
    far = x + scale * torch.randn(x.shape, generator=g)
    threat = ThreatModel(norm, eps)
    p = threat.project(far, x)
    assert threat.contains(p, x, tol=1e-5).all()
    assert torch.allclose(threat.project(p, x), p, atol=1e-6)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), norm=st.sampled_from(list(Norm)))
def test_points_inside_are_left_alone_and_points_outside_are_flagged(seed, norm):
    g = torch.Generator().manual_seed(seed)
    x = 0.25 + 0.5 * torch.rand((3, 1, 4, 4), generator=g)
    threat = ThreatModel(norm, 0.1)
    inside = threat.project(x + 0.01 * torch.randn(x.shape, generator=g), x)
    assert torch.allclose(threat.project(inside, x), inside)
    outside = x.clone()
    outside[1] += 0.2
    assert threat.contains(outside, x).tolist() == [True, False, True]


def test_random_start_is_inside():
    x = torch.rand((8, 3, 6, 6))
    for norm, eps in ((Norm.LINF, 8 / 255), (Norm.L2, 0.5)):
        start = ThreatModel(norm, eps).random_start(x, torch.Generator().manual_seed(0))
        assert ThreatModel(norm, eps).contains(start, x).all()
