"Gene alignment, labels, splits, weights and the input contract: bad input gets one clear message naming the file."
import gzip, hashlib, numpy as np, pandas as pd, pytest, scipy.sparse as sp
from sims_nb.data import (clean_gene_names, align_genes, read_labels, encode_labels, stratified_split, class_weights,
                          detect_input, Normalise)

def genes(n, prefix='G'): return [f'{prefix}{i}' for i in range(n)]

def test_alignment_matches_case_space_and_ensembl_versions():
    a = genes(60) + ['ENSG00000198851.10', ' cd3e']
    b = [g.lower() for g in genes(60)][::-1] + ['ENSG00000198851', 'CD3E']
    al = align_genes([a, b], names=['a.h5ad', 'b.h5ad'])
    assert len(al.genes) == 62
    # every column of b lands on the model position of the same gene in a
    np.testing.assert_array_equal(al.genes[al.columns[1]], clean_gene_names(b))

def test_union_fills_and_intersection_drops():
    al = align_genes([genes(60), genes(70)[10:]], how='union')
    assert len(al.genes) == 70 and (al.columns[0] >= 0).all() and (al.columns[1] >= 0).all()
    al = align_genes([genes(60), genes(70)[10:]], how='intersection')
    assert len(al.genes) == 50 and (al.columns[0] == -1).sum() == 10
    assert list(al.report()['genes kept']) == [50, 50]

@pytest.mark.parametrize('lists,message', [
    ([genes(60) + ['G1']], 'x.h5ad: 1 gene names occur more than once'),
    ([genes(60), genes(60, 'ENSG')], 'only 0 genes are shared'),
    ([[]], 'x.h5ad: the file has no genes'),
])
def test_alignment_errors_name_the_file_and_fix(lists, message):
    with pytest.raises(ValueError, match=message): align_genes(lists, names=['x.h5ad', 'y.h5ad'][:len(lists)])

@pytest.fixture
def cells(): return pd.Index([f'cell{i}' for i in range(6)])

def test_label_file_by_id_any_order_gzip_tsv(tmp_path, cells):
    path = tmp_path/'labels.tsv.gz'
    with gzip.open(path, 'wt') as f:
        f.write('barcode\tcell_type\n' + ''.join(f'{c}\t{"T" if i % 2 else "B"}\n' for i, c in reversed(list(enumerate(cells)))))
    before = hashlib.md5(path.read_bytes()).hexdigest()
    labels = read_labels(path, 'cell_type', cells)
    assert list(labels) == ['B', 'T'] * 3 and list(labels.index) == list(cells)
    assert hashlib.md5(path.read_bytes()).hexdigest() == before, 'input files are never written'

def test_label_file_by_order(tmp_path, cells):
    (tmp_path/'l.csv').write_text('cell_type\n' + 'B\nT\n' * 3)
    assert list(read_labels(tmp_path/'l.csv', 'cell_type', cells)) == ['B', 'T'] * 3

@pytest.mark.parametrize('content,message', [
    ('cell_type\nB\nT\n', 'l.csv: 2 label rows for 6 cells'),
    ('celltype\nB\n', "l.csv: no column 'cell_type'"),
    ('', 'l.csv: the label file is empty'),
    ('id,cell_type\ncell0,B\ncell1,T\ncell2,B\ncell3,T\n', 'l.csv: 2 cells have no row'),
])
def test_label_file_errors(tmp_path, cells, content, message):
    (tmp_path/'l.csv').write_text(content)
    with pytest.raises(ValueError, match=message): read_labels(tmp_path/'l.csv', 'cell_type', cells)

def test_encoding_errors_and_numbers():
    with pytest.raises(ValueError, match='obs.cell_type: 1 cells have no label'): encode_labels(['B', np.nan, 'T'], 'obs.cell_type')
    with pytest.raises(ValueError, match='at least two classes'): encode_labels(['B'] * 4)
    with pytest.raises(ValueError, match='looks like a measurement'): encode_labels([0.5, 1.25])
    codes, classes = encode_labels([3, 1, 3])
    assert list(classes) == ['1', '3'] and list(codes) == [1, 0, 1]

def test_splits_are_deterministic_stratified_and_disjoint():
    codes = np.repeat(np.arange(4), [500, 200, 50, 10])
    a, b = stratified_split(codes, seed=3), stratified_split(codes, seed=3)
    for k in a: np.testing.assert_array_equal(a[k], b[k])
    assert len(np.unique(np.concatenate(list(a.values())))) == len(codes)
    for idx in a.values(): assert set(np.unique(codes[idx])) == {0, 1, 2, 3}
    with pytest.raises(ValueError, match='classes 3 have fewer cells'): stratified_split(np.repeat(np.arange(4), [50, 50, 50, 1]))
    assert len(stratified_split(np.repeat([0, 1], [5, 2]), valid_pct=0, test_pct=0.4)['valid']) == 0

def test_class_weights_use_training_cells_only():
    codes = np.repeat(np.arange(3), [600, 300, 100])
    split = stratified_split(codes, seed=0)
    weights = class_weights(codes[split['train']], 3)
    relabelled = codes.copy(); relabelled[split['test']] = 0  # whatever the held-out cells are
    np.testing.assert_allclose(class_weights(relabelled[split['train']], 3), weights)
    assert weights[2] > weights[1] > weights[0]

def test_input_kinds_and_replay():
    rng = np.random.default_rng(0)
    counts = sp.random(50, 80, density=0.2, format='csr', random_state=0, data_rvs=lambda n: rng.integers(1, 30, n).astype(float))
    assert detect_input(counts).kind == 'counts'
    norm = Normalise.for_input(counts)
    logged = norm(counts)
    assert detect_input(logged).kind == 'log-normalised'
    np.testing.assert_allclose(norm(counts.toarray()), logged.toarray(), rtol=1e-5, atol=1e-6)  # dense and sparse alike
    np.testing.assert_allclose(np.expm1(logged.toarray()).sum(1)[np.asarray(counts.sum(1)).ravel() > 0], 1e4, rtol=1e-4)
    assert detect_input(logged.toarray() - 1).kind == 'scaled'
    with pytest.warns(UserWarning, match='scaled'): assert Normalise.for_input(logged.toarray() - 1).method == 'none'
    with pytest.raises(ValueError, match='s.h5ad: the matrix holds NaN'): detect_input(np.array([[np.inf, 1.]]), 's.h5ad')

# ---- lazy reading from .h5ad ----
import anndata as ad, torch
from sims_nb.data import CellData, BlockSampler, sims_dataloaders
from sims_nb.readers import H5adSource

def write_h5ad(path, n_cells=120, genes_=None, seed=0, dense=False, csc=False, labels=None, kind='counts'):
    rng = np.random.default_rng(seed)
    genes_ = genes_ if genes_ is not None else genes(80)
    X = sp.random(n_cells, len(genes_), density=0.1, format='csr', random_state=seed, data_rvs=lambda n: rng.integers(1, 20, n).astype(np.float32))
    if kind == 'log': X.data = np.log1p(X.data) / 3
    X = X.toarray() if dense else (X.tocsc() if csc else X)
    obs = pd.DataFrame({'cell_type': labels if labels is not None else np.array(['B', 'T', 'NK'])[np.arange(n_cells) % 3]},
                       index=[f'{path.stem}_{i}' for i in range(n_cells)])
    adata = ad.AnnData(X, obs=obs, var=pd.DataFrame(index=genes_))
    adata.layers['raw'] = X
    adata.write_h5ad(path)
    return adata

@pytest.mark.parametrize('dense', [False, True])
def test_h5ad_rows_read_lazily_equal_anndata(tmp_path, dense):
    adata = write_h5ad(tmp_path/'a.h5ad', dense=dense)
    before = hashlib.md5((tmp_path/'a.h5ad').read_bytes()).hexdigest()
    source = H5adSource(tmp_path/'a.h5ad')
    rows = np.array([0, 1, 2, 7, 50, 51, 119])
    expected = adata.X[rows] if dense else adata.X[rows].toarray()
    np.testing.assert_array_equal(source.read(rows).toarray(), expected)
    np.testing.assert_array_equal(H5adSource(tmp_path/'a.h5ad', layer='raw').read(rows).toarray(), expected)
    assert hashlib.md5((tmp_path/'a.h5ad').read_bytes()).hexdigest() == before, 'input files are never written'

def test_h5ad_errors(tmp_path):
    write_h5ad(tmp_path/'a.h5ad')
    (tmp_path/'cut.h5ad').write_bytes((tmp_path/'a.h5ad').read_bytes()[:3000])
    with pytest.raises(ValueError, match='cut.h5ad: cannot be read as .h5ad'): H5adSource(tmp_path/'cut.h5ad')
    (tmp_path/'empty.h5ad').write_bytes(b'')
    with pytest.raises(ValueError, match='empty.h5ad: cannot be read'): H5adSource(tmp_path/'empty.h5ad')
    with pytest.raises(FileNotFoundError, match='nope.h5ad: no such file'): H5adSource(tmp_path/'nope.h5ad')
    write_h5ad(tmp_path/'csc.h5ad', csc=True)
    with pytest.raises(ValueError, match='csc.h5ad: X is stored column-major'): H5adSource(tmp_path/'csc.h5ad')
    ad.AnnData(np.zeros((0, 60), np.float32), var=pd.DataFrame(index=genes(60))).write_h5ad(tmp_path/'none.h5ad')
    with pytest.raises(ValueError, match='none.h5ad: the file has no cells'): H5adSource(tmp_path/'none.h5ad')

def test_cell_data_aligns_two_files_and_label_files(tmp_path):
    write_h5ad(tmp_path/'a.h5ad', genes_=genes(80))
    b = write_h5ad(tmp_path/'b.h5ad', n_cells=60, genes_=[g.lower() for g in genes(100)[20:]], seed=1)
    (tmp_path/'a.csv').write_text('cell_type\n' + 'B\nT\nNK\n' * 40)
    (tmp_path/'b.csv').write_text('id,cell_type\n' + ''.join(f'b_{i},{"T" if i % 2 else "B"}\n' for i in range(60)))
    data = CellData([tmp_path/'a.h5ad', tmp_path/'b.h5ad'], [tmp_path/'a.csv', tmp_path/'b.csv'], min_genes=10)
    assert len(data) == 180 and len(data.genes) == 60 and list(data.classes) == ['B', 'NK', 'T']
    x = data.cells(np.array([0, 120 + 7])).toarray()
    expected = data.normalise(b.X[[7]]).toarray().ravel()[:60]  # b's first 60 genes are the shared ones, in order
    np.testing.assert_allclose(x[1], expected, rtol=1e-6)
    union = CellData([tmp_path/'a.h5ad', tmp_path/'b.h5ad'], how='union', min_genes=10)
    assert len(union.genes) == 100 and union.cells(np.array([130])).shape == (1, 100)

def test_cell_data_refuses_mixed_kinds_and_bad_label_counts(tmp_path):
    write_h5ad(tmp_path/'a.h5ad'); write_h5ad(tmp_path/'b.h5ad', kind='log')
    with pytest.raises(ValueError, match='files hold different kinds of values: a.h5ad: counts'): CellData([tmp_path/'a.h5ad', tmp_path/'b.h5ad'])
    with pytest.raises(ValueError, match='1 label files for 2 data files'): CellData([tmp_path/'a.h5ad', tmp_path/'b.h5ad'], [tmp_path/'x.csv'])

def test_block_sampler_covers_each_cell_once_per_epoch():
    sampler = BlockSampler(np.arange(0, 1000, 3), bs=64, block=16, seed=1)
    for _ in range(2):
        batches = list(sampler)
        assert all((np.diff(b) > 0).all() for b in batches)
        np.testing.assert_array_equal(np.sort(np.concatenate(batches)), np.arange(0, 1000, 3))

def test_dataloaders_with_workers_give_the_same_batches(tmp_path):
    write_h5ad(tmp_path/'a.h5ad', n_cells=300)
    plain = sims_dataloaders([tmp_path/'a.h5ad'], bs=64, min_genes=10)
    workers = sims_dataloaders([tmp_path/'a.h5ad'], bs=64, min_genes=10, num_workers=2)
    for (x0, y0), (x1, y1) in zip(plain.valid, workers.valid):
        assert torch.equal(x0.to_dense(), x1.to_dense()) and torch.equal(y0, y1)
    x, y = next(iter(plain.train))
    assert x.layout == torch.sparse_csr and x.shape == (64, 80)
    assert sorted(np.concatenate([plain.splits[k] for k in ('train', 'valid', 'test')])) == list(range(300))

def test_empty_cells_anywhere_in_a_batch(tmp_path):
    write_h5ad(tmp_path/'a.h5ad', genes_=genes(80))
    c = write_h5ad(tmp_path/'c.h5ad', n_cells=30, genes_=genes(80)[::-1], seed=2)  # reversed: columns must move
    X = c.X.tolil(); X[[0, 28, 29]] = 0
    ad.AnnData(X.tocsr(), obs=c.obs, var=c.var).write_h5ad(tmp_path/'c.h5ad')
    data = CellData([tmp_path/'a.h5ad', tmp_path/'c.h5ad'], min_genes=10)
    rows = data.cells(np.array([5, 120, 121, 148, 149]))
    assert rows.shape == (5, 80) and rows[[1, 3, 4]].nnz == 0 and rows[2].nnz == c.X[1].nnz
    np.testing.assert_allclose(rows[2].toarray().ravel()[::-1], data.normalise(c.X[1]).toarray().ravel(), rtol=1e-6)
    one = sp.csr_matrix((3, 80), dtype=np.float32); one[1, 5] = 4.
    np.testing.assert_allclose(data.normalise(one).toarray()[1, 5], np.log1p(1e4), rtol=1e-6)

def test_other_formats_and_split_options(tmp_path):
    a = write_h5ad(tmp_path/'a.h5ad', n_cells=90)
    a.obs['fold'] = np.array(['train', 'valid', 'test'])[np.arange(90) % 3]
    a.write_h5ad(tmp_path/'a.h5ad')
    dls = sims_dataloaders([tmp_path/'a.h5ad'], split_col='fold', min_genes=10, bs=16)
    np.testing.assert_array_equal(dls.splits['valid'], np.arange(1, 90, 3))
    a.obs['fold'] = 'holdout'; a.write_h5ad(tmp_path/'b.h5ad')
    with pytest.raises(ValueError, match="obs column 'fold': values must be"): sims_dataloaders([tmp_path/'b.h5ad'], split_col='fold', min_genes=10)
    a.to_df().to_csv(tmp_path/'a.csv')
    (tmp_path/'a_labels.csv').write_text('cell_type\n' + '\n'.join(a.obs['cell_type']) + '\n')
    both = sims_dataloaders([tmp_path/'a.h5ad', tmp_path/'a.csv'], [None, tmp_path/'a_labels.csv'], test_files=[1], min_genes=10, bs=16)
    np.testing.assert_array_equal(both.splits['test'], np.arange(90, 180))  # obs labels for one file, a label file for the other
    data = CellData([tmp_path/'a.csv'], [tmp_path/'a_labels.csv'], min_genes=10)
    np.testing.assert_allclose(data.cells(np.arange(5)).toarray(), data.normalise(a.X[:5]).toarray(), rtol=1e-6)
    with pytest.raises(ValueError, match="a.csv: obs has no column 'cell_type'"): CellData([tmp_path/'a.csv'], min_genes=10)

def test_readers_opened_by_hand_mix_with_paths(tmp_path):
    import h5py
    from sims_nb.readers import Hdf5MatrixSource
    a = write_h5ad(tmp_path/'a.h5ad', n_cells=60, dense=True)
    with h5py.File(tmp_path/'m.h5', 'w') as f:
        f['expr'] = a.X; f['names'] = np.array(a.var_names, dtype='S'); f['ids'] = np.array([f'm{i}' for i in range(60)], dtype='S')
    (tmp_path/'m.csv').write_text('id,cell_type\n' + ''.join(f'm{i},{t}\n' for i, t in enumerate(a.obs['cell_type'])))
    data = CellData([tmp_path/'a.h5ad', Hdf5MatrixSource(tmp_path/'m.h5', 'expr', 'names', 'ids')], [None, tmp_path/'m.csv'], min_genes=10)
    np.testing.assert_allclose(data.cells(np.arange(60, 65)).toarray(), data.cells(np.arange(5)).toarray())

def test_uncompressed_csv_is_read_lazily_by_line(tmp_path):
    from sims_nb.readers import CsvRowsSource, open_source
    a = write_h5ad(tmp_path/'a.h5ad', n_cells=200)
    text = a.to_df().to_csv(lineterminator='\r\n').rstrip('\r\n')  # Windows line ends, no final newline
    (tmp_path/'a.csv').write_text(text)
    src = open_source(tmp_path/'a.csv')
    assert isinstance(src, CsvRowsSource) and src.n_cells == 200 and list(src.var_names) == list(a.var_names)
    rows = np.array([0, 5, 6, 150, 199])
    np.testing.assert_array_equal(src.read(rows).toarray(), a.X[rows].toarray())
    a.to_df().T.to_csv(tmp_path/'t.tsv', sep='\t')
    assert open_source(tmp_path/'t.tsv', cells_as_rows=False).read(rows).toarray().tolist() == a.X[rows].toarray().tolist()

def test_h5ad_source_reads_obs_and_genes_only(tmp_path):
    "obs, gene names and rows as anndata reads them, for X, a layer and .raw; a large layer, obsm and obsp are never loaded"
    import subprocess, sys
    import h5py
    from sims_nb.readers import H5adSource
    from sims_nb.scale import synthetic_cells
    from pathlib import Path
    pbmc = ad.read_h5ad(Path(__file__).resolve().parents[2]/'shared'/'data'/'pbmc68k_reduced_scanpy.h5ad')
    pbmc.layers['counts'] = pbmc.X.copy()
    pbmc.raw = pbmc[:, :300].copy()
    pbmc.obsm['X_pca'] = np.zeros((pbmc.n_obs, 5), np.float32)
    pbmc.write_h5ad(tmp_path/'p.h5ad')
    for layer, genes in ((None, pbmc.var_names), ('counts', pbmc.var_names), ('raw', pbmc.raw.var_names)):
        source = H5adSource(tmp_path/'p.h5ad', layer=layer)
        pd.testing.assert_frame_equal(source.obs, pbmc.obs)
        assert list(source.var_names) == list(genes) and source.n_genes == len(genes)
    path = synthetic_cells(tmp_path/'atlas.h5ad', n_cells=40_000, n_genes=5_000, density=0.05, chunk=10_000)
    with h5py.File(path, 'a') as f:  # a counts layer as large as X (~80 MB), as atlases carry
        f.create_group('layers').attrs.update({'encoding-type': 'dict', 'encoding-version': '0.1.0'})
        f.copy('X', 'layers/counts')
    code = (f"from sims_nb.scale import peak_memory_mb; base = peak_memory_mb(); from sims_nb.readers import H5adSource; "
            f"s = H5adSource({str(path)!r}); print(peak_memory_mb() - base)")
    grown = float(subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True).stdout.split()[-1])
    assert grown < 40, f'opening grew the process by {grown:.0f} MB'
