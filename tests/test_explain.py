"Explanations on small real data: the explain matrix, importances, AnnData output, faithfulness (deletion test) and the viewers driven headlessly"
import warnings
from pathlib import Path
import anndata as ad, numpy as np, pandas as pd, pytest, scipy.sparse as sp
from sims_nb.learner import sims_learner, get_recipe
from sims_nb.explain import explain, deletion_test, Explanation
from sims_nb.viewer import ClassViewer, GeneViewer
from sims_nb.data import clean_gene_names

DATA = Path(__file__).resolve().parents[2]/'shared'/'data'
KANG = DATA/'kang2018_pbmc_stim_muscat_example.h5ad'
warnings.filterwarnings('ignore', message='Sparse CSR tensor support is in beta')

@pytest.fixture(scope='module')
def trained():
    "A model trained briefly on the Kang PBMCs (1,556 cells, 1,267 genes, 5 types), and its test cells as an AnnData"
    learn = sims_learner([KANG], class_label='cell_type', recipe=get_recipe(epochs=12))
    with learn.no_bar(), learn.no_logging(): learn.fit()
    cells = ad.read_h5ad(KANG)[np.sort(learn.dls.splits['test'])].copy()
    return learn.export_model(), cells, learn

@pytest.fixture(scope='module')
def explanation(trained):
    model, cells, _ = trained
    return explain(model, cells, label='cell_type', steps=True)

def test_explain_matrix_is_sparse_and_matches_prediction(trained, explanation):
    model, cells, learn = trained
    assert isinstance(explanation.matrix, sp.csr_matrix) and explanation.matrix.shape == (cells.n_obs, len(model.genes))
    expressed = sp.vstack(list(model.batches(cells)[2]), format='csr')  # the model's input: its genes, normalised
    assert (explanation.matrix.getnnz(1) <= expressed.getnnz(1)).all()  # masks choose among the genes a cell expresses (the default's mask support)
    assert explanation.matrix.nnz < 0.5 * np.prod(explanation.matrix.shape)  # so each cell's explanation names a part of the model's genes, not all
    assert (explanation.predicted == model.predict(cells).most_likely.to_numpy()).all()
    assert len(explanation.steps) == 3 and all(np.allclose(m.sum(1), 1, atol=1e-4) for m in explanation.steps)
    small_batches = explain(model, cells, bs=37)  # streaming: the batch size changes nothing
    assert abs(small_batches.matrix - explanation.matrix).max() < 1e-5
    split = learn.explain()  # the learner's own test split, without reading the file
    assert (split.truth == explanation.truth).all() and abs(split.matrix - explanation.matrix).max() < 1e-5

def test_explains_expressed_genes_only(trained, explanation):
    model, cells, _ = trained
    rows, cols = explanation.matrix.nonzero()
    X = cells.X.tocsr()
    positions = pd.Index(clean_gene_names(cells.var_names)).get_indexer(model.genes[cols])  # the model's genes are cleaned names
    assert (positions >= 0).all()
    assert (np.asarray(X[rows, positions]).ravel() != 0).all()  # the default recipe's masks choose among the cell's detected genes

def test_importances(explanation):
    importance = explanation.global_importance()
    assert importance.iloc[0] == 1 and (importance >= 0).all() and importance.is_monotonic_decreasing
    means = explanation.class_importance('true')
    assert set(means.index) == set(explanation.truth)
    top = explanation.top_genes(5)
    assert set(top.columns) == {'class', 'rank', 'gene', 'importance'} and top.groupby('class').size().max() == 5
    assert len(explanation.unused_genes()) + (importance > 0).sum() == len(explanation.genes)
    assert explanation.cell_genes(0, 3).index[0] == explanation.genes[explanation.matrix[0].toarray().argmax()]
    assert explanation.gene_usage('.').share.sum() == pytest.approx(1)

def test_to_adata_for_scanpy(trained, explanation):
    _, cells, _ = trained
    annotated = explanation.to_adata(cells.copy())
    assert annotated.layers['sims_explain'].shape == annotated.shape
    assert annotated.varm['sims_class_importance'].shape[0] == annotated.n_vars
    assert (annotated.obs['sims_label'].astype(str).to_numpy() == explanation.predicted).all()
    with pytest.raises(ValueError, match='not the'): explanation.to_adata(cells[:10].copy())

def test_top_genes_are_faithful(trained):
    "Deleting a class's own top genes costs its recall more than deleting random genes, or another class's top genes"
    model, cells, _ = trained
    table = deletion_test(model, cells, 'cell_type', k=10, n_random=3)
    own = (table.recall - table['without own top 10']).mean()
    assert own > (table.recall - table['without 10 random']).mean()
    assert own > (table.recall - table['without 10 random used']).mean()
    assert own > (table.recall - table['without another class top 10']).mean()

def test_bad_input(trained, explanation):
    model, cells, _ = trained
    with pytest.raises(ValueError, match="no obs column 'celltype'"): explain(model, cells, label='celltype')
    with pytest.raises(ValueError, match="of the model's"): explain(model, ad.read_h5ad(DATA/'scdcc_worm_neuron_anon.h5ad'))
    no_truth = Explanation(explanation.matrix, explanation.genes, explanation.classes, explanation.cells, explanation.predicted)
    with pytest.raises(ValueError, match='needs the true classes'): no_truth.class_importance('true')

def test_class_viewer_headless(explanation):
    viewer = ClassViewer(explanation, n=5)
    first = explanation.class_importance().index[0]
    assert viewer.class_picker.value == first and len(viewer.table) <= 5
    viewer.class_picker.value = 'B cells'; viewer.top_n.value = 7
    assert viewer.table.index.tolist() == explanation.class_importance().loc['B cells'].nlargest(7).index.tolist()
    image, table = viewer.output.outputs
    assert image['data']['image/png'] and viewer.table.index[0] in table['data']['text/html']
    viewer.cell_box.value = '3'
    assert viewer.table.index.tolist() == explanation.cell_genes(3, 7).index.tolist()
    viewer.cell_box.value = 'nobody'
    assert len(viewer.table) == 0 and 'no cell' in viewer.static
    bundle = viewer._repr_mimebundle_()
    assert 'application/vnd.jupyter.widget-view+json' in bundle and '<img src="data:image/png;base64,' in bundle['text/html']

def test_gene_viewer_headless(explanation):
    viewer = GeneViewer(explanation)
    assert viewer.gene_picker.value == explanation.global_importance().index[0]
    gene = explanation.global_importance().index[3]
    viewer.gene_picker.value = gene
    assert viewer.table.to_dict() == explanation.class_importance()[gene].to_dict() and gene in viewer.static
