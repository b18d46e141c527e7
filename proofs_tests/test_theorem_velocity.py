"""Velocity matching (spec §1 fact 4): training Â alone by SGD on L_velocity converges to the posterior mean
E[A | z_t] under p_data(x)·q(z_t | x), computed independently by enumeration; not to the prior mean."""

from __future__ import annotations

import itertools

import torch

from oemdm_spec.reference.terms import l_velocity


def test_sgd_on_velocity_loss_learns_the_posterior_mean() -> None:
    gen = torch.Generator().manual_seed(0)
    length, vocab, t = 2, 2, 0.6
    xs = torch.tensor(list(itertools.product(range(vocab), repeat=length)))  # the 4 sequences
    p_data = torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64)
    # an input-dependent forward exponent w_i(x) (as LoMDM's w_φ): A_i(x, t) = w_i(x)/t
    w = torch.tensor([[0.3, 1.0], [3.0, 0.6], [0.5, 1.8], [0.3, 0.4]], dtype=torch.float64)
    A = w / t
    n_states = (vocab + 1) ** length

    def state_index(z: torch.Tensor) -> torch.Tensor:
        return z[..., 0] * (vocab + 1) + z[..., 1]

    # Enumeration: posterior weight of x given z is p_data(x)·Π_i q(z_i | x_i, t), q(masked) = t^{w_i(x)}.
    post_num = torch.zeros(n_states, length, dtype=torch.float64)
    post_den = torch.zeros(n_states, length, dtype=torch.float64)
    for masks in itertools.product([False, True], repeat=length):
        m = torch.tensor(masks)
        q = torch.where(m, t**w, 1 - t**w).prod(-1)  # (4,)
        z = torch.where(m, torch.full_like(xs, vocab), xs)
        idx = state_index(z)
        for j in range(xs.shape[0]):
            post_num[idx[j]] += m.double() * p_data[j] * q[j] * A[j]
            post_den[idx[j]] += m.double() * p_data[j] * q[j]
    reachable = post_den > 0
    posterior_mean = torch.where(reachable, post_num / post_den.clamp_min(1e-300), torch.zeros_like(post_num))

    # SGD on log Â(z) (one parameter per state and position), samples (x, z_t) from the joint.
    log_a_hat = torch.zeros(n_states, length, dtype=torch.float64, requires_grad=True)
    # Adam (a per-parameter step size) so that rarely visited states learn as fast as common ones.
    opt = torch.optim.Adam([log_a_hat], lr=0.05)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: 1.0 / (1.0 + k / 100))
    avg = torch.zeros_like(log_a_hat)
    steps, batch = 600, 1024
    for step in range(steps):
        j = torch.multinomial(p_data, batch, replacement=True, generator=gen)
        masked = torch.rand(batch, length, generator=gen, dtype=torch.float64) < t ** w[j]
        z = torch.where(masked, torch.full_like(xs[j], vocab), xs[j])
        a_hat = log_a_hat.exp()[state_index(z)]  # (batch, L)
        loss = torch.where(masked, l_velocity(A[j], a_hat), torch.zeros_like(a_hat)).sum() / batch
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step >= steps // 2:  # Polyak averaging of the second half removes most SGD noise
            avg += log_a_hat.detach() / (steps - steps // 2)
    learned = avg.exp()
    # SGD noise: with the decaying step and averaging the error is ~1% of A (A ∈ [0.7, 4.2]); 3% margin.
    torch.testing.assert_close(learned[reachable], posterior_mean[reachable], rtol=0.03, atol=0.0)

    # the prior mean over the x consistent with z (ignoring how likely the mask pattern is) is different:
    # state z = (m, 1): x ∈ {(0, 1), (1, 1)}
    z_state = int(state_index(torch.tensor([vocab, 1])))
    consistent = xs[:, 1] == 1
    prior_mean = (p_data[consistent] * A[consistent, 0]).sum() / p_data[consistent].sum()
    assert abs(float(prior_mean) / float(posterior_mean[z_state, 0]) - 1) > 0.1
    assert abs(float(learned[z_state, 0]) / float(posterior_mean[z_state, 0]) - 1) < 0.03
