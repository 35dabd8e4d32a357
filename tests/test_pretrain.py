"Pretraining end to end on real data: the loss falls, the encoder file round-trips, fine-tuning starts from it with genes aligned by name, bad input is refused"
import warnings
from pathlib import Path
import numpy as np, pytest, torch, anndata as ad
from sims_nb.pretrain import sims_pretrainer, PretrainedEncoder, hide_genes
from sims_nb.learner import sims_learner
from sims_nb.data import csr_tensor, CellData

DATA = Path(__file__).resolve().parents[1].parent/'shared'/'data'
PBMC, KANG = DATA/'pbmc3k_seurat.h5ad', DATA/'kang2018_pbmc_stim_muscat_example.h5ad'
warnings.filterwarnings('ignore', message='Sparse CSR tensor support is in beta')

@pytest.fixture(scope='module')
def encoder_file(tmp_path_factory):
    "An encoder pretrained briefly on pbmc3k and Kang's cells together (genes in both files)"
    learn = sims_pretrainer([PBMC, KANG], steps=150, n_genes=800)
    with learn.no_bar(), learn.no_logging(): learn.fit()
    losses = learn.history.valid_loss
    assert losses.iloc[-1] < losses.iloc[0] - 0.02, f'the reconstruction loss did not fall: {losses.round(3).tolist()}'
    return learn.save_encoder(tmp_path_factory.mktemp('enc')/'encoder.pt')

def test_hide_genes_is_sparse_and_exact():
    x = csr_tensor(CellData([PBMC], class_label=None).cells(np.arange(64)))
    shown, rows, cols, targets = hide_genes(x, 0.5, 2., torch.Generator().manual_seed(0))
    assert shown.layout == torch.sparse_csr and shown.values().numel() < x.values().numel()
    torch.testing.assert_close(targets, x.to_dense()[rows, cols])
    assert (shown.to_dense()[rows, cols] == 0).all()  # nothing asked about is shown

def test_encoder_file_round_trip(encoder_file, tmp_path):
    encoder = PretrainedEncoder.load(encoder_file)
    assert len(encoder.genes) == 800 and encoder.info['cells'] == 2638 + 1556
    changed = tmp_path/'changed.pt'
    payload = torch.load(encoder_file, weights_only=True)
    next(iter(payload['state_dict'].values())).add_(1)
    torch.save(payload, changed)
    with pytest.raises(ValueError, match='checksum'): PretrainedEncoder.load(changed)
    with pytest.raises(ValueError, match='not a sims_nb encoder file'): PretrainedEncoder.load(PBMC)
    with pytest.raises(FileNotFoundError, match='no such encoder file'): PretrainedEncoder.load(tmp_path/'missing.pt')

def test_fine_tune_aligns_genes_and_saves(encoder_file, tmp_path):
    encoder = PretrainedEncoder.load(encoder_file)
    kang = ad.read_h5ad(KANG)
    reordered = kang[:, kang.var_names[::-1]].copy()  # other gene order: aligned by name
    learn = sims_learner([reordered], class_label='cell_type', pretrained=encoder_file, pretrained_genes='markers', recipe={'steps': 150})
    known = encoder.knows(learn.genes)
    in_kang = encoder.knows(CellData([KANG], class_label=None).genes).sum()
    assert known.sum() == in_kang and known.mean() > 0.5  # every encoder gene Kang holds, and Kang's markers beside them
    rows = [list(encoder.genes).index(g) for g in learn.genes[known]]
    ours, theirs = learn.model.encoder.state_dict(), encoder.encoder.state_dict()
    for key in ['initial_splitter.shared.layers.0.fc.weight', 'att_transformers.2.fc.weight', 'att_transformers.0.bn.running_var']:
        torch.testing.assert_close(ours[key][known], theirs[key][rows])  # a gene's weights follow it by name
    torch.testing.assert_close(ours['feat_transformers.1.specific.layers.0.fc.weight'], theirs['feat_transformers.1.specific.layers.0.fc.weight'])
    with learn.no_bar(), learn.no_logging(): learn.fit()
    assert learn.evaluate().scores['accuracy'] > 0.6
    model = learn.export_model(); model.save(tmp_path/'model.pt')
    from sims_nb.learner import SimsModel
    again = SimsModel.load(tmp_path/'model.pt')
    assert list(again.genes) == list(learn.genes)
    p1, p2 = model.predict(kang[:200].copy(), unassigned=False), again.predict(kang[:200].copy(), unassigned=False)
    assert (p1.label == p2.label).all()

def test_fine_tune_gene_choice(encoder_file):
    encoder = PretrainedEncoder.load(encoder_file)
    kang = ad.read_h5ad(KANG)
    part = kang[:, kang.var_names[:1000]].copy()  # some of the encoder's genes are missing
    on_encoder = sims_learner([part], class_label='cell_type', pretrained=encoder_file)
    assert list(on_encoder.genes) == list(encoder.genes)  # the default: read onto the encoder's genes, zeros where the data lack one
    missing = ~np.isin(encoder.genes, CellData([part], class_label=None).genes)
    assert missing.any() and on_encoder.dls.data.cells(np.arange(100))[:, missing].nnz == 0
    with pytest.raises(ValueError, match="use 'encoder' or 'markers'"):
        sims_learner([kang], pretrained=encoder_file, pretrained_genes='all')

def test_fine_tune_refuses_mismatches(encoder_file):
    with pytest.raises(ValueError, match='genes to use are in the data'):
        sims_learner([DATA/'paul2015_myeloid_tradeseq.h5ad'], pretrained=encoder_file)  # mouse, 240 genes
    kang = ad.read_h5ad(KANG)
    foreign = kang.copy(); foreign.var_names = [f'gene{i}' for i in range(foreign.n_vars)]
    with pytest.raises(ValueError, match="none of the model's"): sims_learner([foreign], pretrained=encoder_file, pretrained_genes='markers')
    keep = set(PretrainedEncoder.load(encoder_file).genes[:10])
    few = kang.copy(); few.var_names = [g if g in keep else f'gene{i}' for i, g in enumerate(kang.var_names)]  # 10 genes known, of all 1,267
    with pytest.warns(UserWarning, match='start untrained'):
        sims_learner([few], pretrained=encoder_file, pretrained_genes='markers', recipe={'genes_per_class': None})
    kang.X = kang.X.log1p() if hasattr(kang.X, 'log1p') else np.log1p(kang.X)  # log-normalised-looking values, not counts
    with pytest.raises(ValueError, match='normalised'):
        sims_learner([kang], pretrained=encoder_file)

def test_zoo_holds_encoders(encoder_file, tmp_path):
    from sims_nb.zoo import Zoo
    zoo = Zoo(tmp_path/'zoo')
    entry = zoo.add(encoder_file, 'pbmc-kang-encoder', tissue='blood', species='human')
    assert entry['kind'] == 'encoder' and entry['genes'] == 800 and entry['classes'] == []
    assert zoo.list().loc['pbmc-kang-encoder', 'kind'] == 'encoder'
    encoder = zoo.load('pbmc-kang-encoder')
    assert isinstance(encoder, PretrainedEncoder) and len(encoder.genes) == 800
    assert 'pretrained without labels' in zoo.card('pbmc-kang-encoder')
    assert len(zoo.match(KANG, n_cells=100)) == 0  # an encoder cannot annotate: match ranks classifiers only
