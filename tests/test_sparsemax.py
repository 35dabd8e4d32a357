"Sparsemax and 1.5-entmax against independent references, on shapes and values the notebook does not try."
import numpy as np, pytest, torch
from sims_nb.sparsemax import sparsemax, entmax15, candidates, sparsemax_rows, entmax15_rows

def bisect(z, power, iters=200):
    "p_i = [z_i/power_scale - tau]_+^power with the tau that makes each row sum to 1, by bisection (float64)"
    x = np.asarray(z, dtype=np.float64) / (2 if power == 2 else 1)
    lo, hi = x.max(-1, keepdims=True) - 1, x.max(-1, keepdims=True)
    for _ in range(iters):
        mid = (lo + hi) / 2
        big = (np.clip(x - mid, 0, None)**power).sum(-1, keepdims=True) > 1
        lo, hi = np.where(big, mid, lo), np.where(big, hi, mid)
    return np.clip(x - (lo + hi) / 2, 0, None)**power

@pytest.mark.parametrize('fn,power', [(sparsemax, 1), (entmax15, 2)])
@pytest.mark.parametrize('shape,dim', [((7,), 0), ((5, 1), 1), ((3, 4, 200), -1), ((3, 90, 2), 1), ((2, 3000), -1)])
@pytest.mark.parametrize('scale', [0.01, 1., 30.])
def test_matches_bisection(fn, power, shape, dim, scale):
    z = torch.randn(*shape, dtype=torch.float64) * scale
    out = fn(z, dim)
    expected = np.moveaxis(bisect(np.moveaxis(z.numpy(), dim, -1), power), -1, dim)
    np.testing.assert_allclose(out.numpy(), expected, atol=1e-9)

@pytest.mark.parametrize('fn,power', [(sparsemax, 1), (entmax15, 2)])
def test_float32_rows_with_a_large_support(fn, power):
    "Flat rows keep thousands of entries; the ragged threshold runs in float64 so long rows stay exact"
    z = torch.randn(4, 20000) * 1e-3
    out = fn(z)
    assert (out > 0).sum() > 4000
    np.testing.assert_allclose(out.numpy(), bisect(z.double().numpy(), power), atol=1e-6)

@pytest.mark.parametrize('fn', [sparsemax, entmax15])
def test_half_precision_input(fn):
    z = torch.randn(8, 50).half()
    out = fn(z)
    assert out.dtype == torch.float16
    torch.testing.assert_close(out.float().sum(-1), torch.ones(8), atol=1e-2, rtol=0)

@pytest.mark.parametrize('kind,fn,rows_fn', [('sparsemax', sparsemax, sparsemax_rows), ('entmax', entmax15, entmax15_rows)])
def test_candidates_contain_the_support_whatever_k(kind, fn, rows_fn):
    z = torch.randn(64, 500, dtype=torch.float64) * torch.logspace(-2, 1, 64, dtype=torch.float64)[:, None]
    dense = fn(z)
    for k, block in [(1, 1), (3, 1), (3, 7), (64, 32), (500, 1), (32, 500), (5, 499)]:
        rows, cols = candidates(z, kind, k=k, block=block)
        assert (rows.diff() >= 0).all()
        kept = torch.zeros_like(z, dtype=torch.bool); kept[rows, cols] = True
        assert kept[dense > 0].all()
        values = rows_fn(z[rows, cols], rows, 64)
        torch.testing.assert_close(torch.zeros_like(z).index_put((rows, cols), values), dense)
