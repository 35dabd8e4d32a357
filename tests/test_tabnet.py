"sims_nb's TabNet against pytorch-tabnet's with copied weights, and the properties the notebook cannot show at length."
import math, pytest, torch, torch.nn.functional as F
import pytorch_tabnet.tab_network as reference_network
from pytorch_tabnet.tab_network import TabNet as ReferenceTabNet
from sims_nb.tabnet import TabNet, from_pytorch_tabnet

@pytest.fixture(autouse=True)
def double_precision_residual_scale(monkeypatch):
    """pytorch-tabnet scales its residuals by sqrt(0.5) built as a float32 tensor, an error of 1e-8 that
    grows to 1e-4 over five steps even in float64. Its GLU blocks run here with the exact scale, so that
    the comparison is between the two algorithms, not between two roundings of a constant."""
    def forward(self, x):
        first = 1 if self.first else 0
        if self.first: x = self.glu_layers[0](x)
        for layer in self.glu_layers[first:]: x = (x + layer(x)) * math.sqrt(0.5)
        return x
    monkeypatch.setattr(reference_network.GLU_Block, 'forward', forward)

def pair(n_genes=300, n_classes=4, **kwargs):
    "pytorch-tabnet's model and ours with the same weights, in double precision"
    reference = ReferenceTabNet(n_genes, n_classes, group_attention_matrix=torch.eye(n_genes, dtype=torch.float64), **kwargs)
    ours = TabNet(n_genes, n_classes, **{k.replace('virtual_batch_size', 'virtual_bs'): v for k, v in kwargs.items()})
    ours.load_state_dict(from_pytorch_tabnet(reference.state_dict()))
    return reference.double(), ours.double()

def counts(n_cells=256, n_genes=300, density=0.1, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(n_cells, n_genes, generator=g) < density) * torch.randint(1, 30, (n_cells, n_genes), generator=g)
    return torch.log1p(x.double())

TOL = 1e-8  # double precision, same residual scale: what is left is summation order

CONFIGS = [dict(n_d=16, n_a=16), dict(n_d=8, n_a=8, mask_type='entmax'), dict(n_d=8, n_a=4, n_steps=5, gamma=1.0),
           dict(n_d=8, n_a=8, n_shared=0, n_independent=2), dict(n_d=8, n_a=8, n_shared=3, n_independent=0),
           dict(n_d=8, n_a=8, virtual_batch_size=100, momentum=0.1)]

@pytest.mark.parametrize('config', CONFIGS)
@pytest.mark.parametrize('sparse', [False, True])
def test_training_mode_matches_reference(config, sparse):
    reference, ours = pair(**config)
    x, y = counts(300), torch.randint(0, 4, (300,))  # 300 cells: uneven virtual batches
    ref_logits, ref_m_loss = reference(x)
    logits, sparsity = ours(x.to_sparse_csr() if sparse else x)
    torch.testing.assert_close(logits, ref_logits, atol=TOL, rtol=TOL)
    torch.testing.assert_close(sparsity, -ref_m_loss, atol=TOL, rtol=TOL)
    (F.cross_entropy(ref_logits, y) - 1e-2*ref_m_loss).backward()
    (F.cross_entropy(logits, y) + 1e-2*sparsity).backward()
    ref_grads = from_pytorch_tabnet({k: p.grad for k, p in reference.state_dict(keep_vars=True).items() if p.requires_grad})
    for name, p in ours.named_parameters():
        torch.testing.assert_close(p.grad, ref_grads[name], atol=TOL, rtol=1e-3, msg=lambda m: f'{name}: {m}')
    ref_state = {'logit_bias': torch.zeros_like(ours.logit_bias), **from_pytorch_tabnet(reference.state_dict())}  # ours has a bias, zero unless set
    for name, b in ours.state_dict().items():  # running statistics updated alike
        torch.testing.assert_close(b, ref_state[name], atol=TOL, rtol=TOL, msg=lambda m: f'{name}: {m}')

@pytest.mark.parametrize('config', CONFIGS[:3])
@pytest.mark.parametrize('sparse', [False, True])
def test_eval_mode_masks_and_explain_match_reference(config, sparse):
    reference, ours = pair(**config)
    with torch.no_grad():  # a training pass first, so that running statistics are not the initial ones
        reference(counts(256, seed=1)); ours(counts(256, seed=1))
    reference.eval(); ours.eval()
    x = counts(100, seed=2)
    ref_explain, ref_masks = reference.forward_masks(x)
    logits, explain, masks = ours.forward_masks(x.to_sparse_csr() if sparse else x)
    torch.testing.assert_close(logits, reference(x)[0], atol=TOL, rtol=TOL)
    torch.testing.assert_close(explain, ref_explain.double(), atol=1e-6, rtol=1e-6)  # pytorch-tabnet sums it in float32
    for step, mask in enumerate(masks): torch.testing.assert_close(mask, ref_masks[step], atol=TOL, rtol=TOL)

def test_masks_are_sparse_rows_on_the_simplex():
    model = TabNet(5000, 3, n_d=8, n_a=8)
    out = model.encoder(counts(256, 5000, 0.05).float().to_sparse_csr())
    for mask in out.masks:
        dense = mask.to_dense(256, 5000)
        torch.testing.assert_close(dense.sum(1), torch.ones(256), atol=1e-4, rtol=0)
        assert (dense >= 0).all() and float((dense > 0).float().mean()) < 0.05
        assert (mask.rows.diff() >= 0).all(), 'rows in increasing order'

def test_all_state_is_registered_so_to_moves_everything():
    model = TabNet(50, 3)
    for module in model.modules():
        stray = [k for k, v in vars(module).items() if isinstance(v, torch.Tensor)]
        assert not stray, f'{type(module).__name__} holds unregistered tensors {stray}'
    model = model.to(torch.float64)
    assert all(t.dtype == torch.float64 for t in model.state_dict().values() if t.is_floating_point())
    logits, _ = model(counts(16, 50))
    assert logits.dtype == torch.float64

def test_parameters_grow_linearly_with_genes():
    "No genes x genes matrix anywhere"
    sizes = {g: sum(t.numel() for t in TabNet(g, 5).state_dict().values()) for g in (1000, 2000, 4000)}
    assert sizes[4000] - sizes[2000] == 2 * (sizes[2000] - sizes[1000])

def test_bfloat16_autocast_gives_masks_in_single_precision():
    model = TabNet(400, 3, n_d=8, n_a=8)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out = model.encoder(counts(128, 400).float().to_sparse_csr())
        logits = model.classify(sum(out.steps))
    assert all(m.values.dtype == torch.float32 for m in out.masks)
    assert torch.isfinite(logits.float()).all()

def test_bad_arguments_fail_clearly():
    with pytest.raises(ValueError, match='mask_type'): TabNet(10, 2, mask_type='softmax')
    with pytest.raises(AssertionError, match='shared or independent'): TabNet(10, 2, n_shared=0, n_independent=0)
