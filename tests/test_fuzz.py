"Corrupt and hostile files: bytes flipped or cut from small h5ad, 10x h5, Matrix Market, csv and model files end in one clear error naming the file"
import shutil, time, warnings
from pathlib import Path
import anndata as ad, h5py, numpy as np, pandas as pd, pytest, scipy.io, scipy.sparse as sp, torch
from hypothesis import given, settings, strategies as st, HealthCheck
from sims_nb.readers import open_source
from sims_nb.learner import sims_learner, SimsModel, get_recipe

DATA = Path(__file__).resolve().parents[2]/'shared'/'data'
warnings.filterwarnings('ignore')

@pytest.fixture(scope='module')
def originals(tmp_path_factory):
    "One small file of each format (60 Kang cells), and a model file"
    folder = tmp_path_factory.mktemp('originals')
    adata = ad.read_h5ad(DATA/'kang2018_pbmc_stim_muscat_example.h5ad')[:60].copy()
    adata.write_h5ad(folder/'cells.h5ad')
    X = sp.csr_matrix(adata.X)
    with h5py.File(folder/'cells.h5', 'w') as f:  # 10x Genomics' layout: genes x cells, CSC of the cells
        g = f.create_group('matrix')
        g['data'], g['indices'], g['indptr'], g['shape'] = X.data, X.indices, X.indptr, np.array([adata.n_vars, adata.n_obs])
        g['barcodes'] = np.array(adata.obs_names, dtype='S')
        g.create_group('features')['name'] = np.array(adata.var_names, dtype='S')
    (folder/'mtx').mkdir()
    scipy.io.mmwrite(folder/'mtx'/'matrix.mtx', X.T.tocoo())
    pd.DataFrame({'id': adata.var_names, 'name': adata.var_names, 'type': 'Gene Expression'}).to_csv(folder/'mtx'/'features.tsv', sep='\t', header=False, index=False)
    pd.Series(adata.obs_names).to_csv(folder/'mtx'/'barcodes.tsv', sep='\t', header=False, index=False)
    pd.DataFrame(X.toarray()[:, :300], index=adata.obs_names, columns=adata.var_names[:300]).to_csv(folder/'cells.csv')
    learn = sims_learner([DATA/'kang2018_pbmc_stim_muscat_example.h5ad'], class_label='cell_type', recipe=get_recipe(epochs=1, steps=None))
    with learn.no_bar(), learn.no_logging(): learn.fit()
    learn.save_model(folder/'model.pt')
    return folder

def damaged(original:Path, target:Path, cut:float|None, flips:list) -> Path:
    "A copy of `original` cut to a share `cut` of its bytes, or with bytes at relative positions `flips` replaced"
    data = bytearray(original.read_bytes())
    if cut is not None: data = data[:int(len(data) * cut)]
    for position, value in flips: data[int(position * (len(data) - 1))] = value
    target.write_bytes(bytes(data))
    return target

damage = st.one_of(st.tuples(st.floats(0, 0.999), st.just([])),
                   st.tuples(st.none(), st.lists(st.tuples(st.floats(0, 1), st.integers(0, 255)), min_size=1, max_size=40)))

def outcome(read, path:Path, limit:float=30.):
    "Either the read succeeds, or it ends in one ValueError/FileNotFoundError that names the file; within `limit` seconds"
    start = time.time()
    try: read()
    except (ValueError, FileNotFoundError) as e:
        message = str(e)
        assert path.name in message, f'{type(e).__name__} without the file name: {message}'
        assert '\n' not in message.strip() and type(e) in (ValueError, FileNotFoundError), f'{type(e).__name__}: {message}'
    assert time.time() - start < limit

def read_every_cell(path):
    def read():
        source = open_source(path)
        for start in range(0, source.n_cells, 25): source.read(np.arange(start, min(start + 25, source.n_cells)))
    return read

FUZZ = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture], derandomize=True)

@pytest.mark.parametrize('name', ['cells.h5ad', 'cells.h5', 'cells.csv'])
@FUZZ
@given(damage=damage)
def test_damaged_data_files(originals, tmp_path, name, damage):
    path = damaged(originals/name, tmp_path/f'damaged{Path(name).suffix}', *damage)
    outcome(read_every_cell(path), path)

@FUZZ
@given(damage=damage)
def test_damaged_matrix_market(originals, tmp_path, damage):
    folder = tmp_path/'mtx'
    shutil.rmtree(folder, ignore_errors=True); shutil.copytree(originals/'mtx', folder)
    damaged(originals/'mtx'/'matrix.mtx', folder/'matrix.mtx', *damage)
    outcome(read_every_cell(folder), folder)

@FUZZ
@given(damage=damage)
def test_damaged_model_files(originals, tmp_path, damage):
    path = damaged(originals/'model.pt', tmp_path/'damaged.pt', *damage)
    outcome(lambda: SimsModel.load(path), path)

def test_model_file_from_the_future_or_another_package(originals, tmp_path):
    payload = torch.load(originals/'model.pt', weights_only=True)
    torch.save({**payload, 'format_version': 99}, tmp_path/'future.pt')
    with pytest.raises(ValueError, match='future.pt: written by a newer sims_nb'): SimsModel.load(tmp_path/'future.pt')
    torch.save({'state_dict': payload['state_dict']}, tmp_path/'other.pt')  # a bare state dict, as another package writes
    with pytest.raises(ValueError, match='other.pt'): SimsModel.load(tmp_path/'other.pt')
