"The model zoo from the shell: add, list, match, show and remove; two processes adding at once; a damaged file refused"
import json, subprocess, sys
from pathlib import Path
import pytest
from sims_nb.learner import sims_learner, get_recipe
from sims_nb.zoo import Zoo

DATA = Path(__file__).resolve().parents[2]/'shared'/'data'
COMMAND = Path(sys.executable).parent/'sims-nb'

def run(*args):
    return subprocess.run([str(COMMAND), *map(str, args)], capture_output=True, text=True)

def start(*args):
    return subprocess.Popen([str(COMMAND), *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

@pytest.fixture(scope='module')
def model_file(tmp_path_factory):
    "A quickly trained Kang PBMC model (human, 5 types), saved as a model file"
    path = tmp_path_factory.mktemp('model')/'kang.pt'
    learn = sims_learner([DATA/'kang2018_pbmc_stim_muscat_example.h5ad'], class_label='cell_type', recipe=get_recipe(steps=150))
    with learn.no_bar(), learn.no_logging(): learn.fit()
    learn.evaluate()
    learn.save_model(path)
    return path

def test_add_list_match_show_remove(model_file, tmp_path):
    zoo = tmp_path/'zoo'
    result = run('zoo', 'add', model_file, '--zoo', zoo, '--name', 'kang-pbmc', '--tissue', 'blood', '--species', 'human')
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith('added kang-pbmc to ')
    listed = run('zoo', 'list', '--zoo', zoo)
    assert listed.returncode == 0 and 'kang-pbmc' in listed.stdout and 'human' in listed.stdout
    matched = run('zoo', 'match', DATA/'pbmc3k_seurat.h5ad', '--zoo', zoo, '--cells', '300')
    assert matched.returncode == 0, matched.stderr
    assert '300 cells of' in matched.stdout and matched.stdout.strip().splitlines()[-1].startswith('best match for') and 'kang-pbmc' in matched.stdout
    worm = run('zoo', 'match', DATA/'scdcc_worm_neuron_anon.h5ad', '--zoo', zoo, '--cells', '100', '--quiet')
    assert worm.returncode == 0 and worm.stdout.startswith('no model of') and 'too few of its genes' in worm.stdout
    shown = run('zoo', 'show', 'kang-pbmc', '--zoo', zoo)
    assert shown.returncode == 0 and shown.stdout.startswith('# kang-pbmc') and '## Classes' in shown.stdout
    assert run('zoo', 'remove', 'kang-pbmc', '--zoo', zoo).returncode == 0
    assert 'no models yet' in run('zoo', 'list', '--zoo', zoo).stdout
    assert sorted(p.name for p in zoo.iterdir()) == ['.lock', 'zoo.json']

def test_default_folder_from_the_environment(model_file, tmp_path, monkeypatch):
    monkeypatch.setenv('SIMS_NB_ZOO', str(tmp_path/'lab_zoo'))
    assert run('zoo', 'add', model_file, '--name', 'kang').returncode == 0
    assert 'kang' in Zoo(tmp_path/'lab_zoo')

def test_two_processes_adding_at_once_both_land(model_file, tmp_path):
    zoo = tmp_path/'zoo'
    names = [f'model-{i}' for i in range(4)]
    processes = [start('zoo', 'add', model_file, '--zoo', zoo, '--name', name) for name in names]
    codes = [p.wait(timeout=120) for p in processes]
    assert codes == [0] * 4, [p.stderr.read() for p in processes]
    assert sorted(Zoo(zoo).entries()) == names
    assert sorted(p.name for p in zoo.glob('*.pt')) == [f'{n}.pt' for n in names]

def test_bad_input_is_one_line_with_exit_code_2(model_file, tmp_path):
    zoo = tmp_path/'zoo'
    assert run('zoo', 'add', model_file, '--zoo', zoo, '--name', 'kang').returncode == 0
    (tmp_path/'junk.pt').write_bytes(b'junk')
    (tmp_path/'other').mkdir(); (tmp_path/'other'/'zoo.json').write_text(json.dumps({'models': {}}))
    cases = [(('zoo', 'add', model_file, '--zoo', zoo, '--name', 'kang'), "already holds a model named 'kang'"),
             (('zoo', 'add', model_file, '--zoo', zoo, '--name', '../kang'), 'cannot name a zoo model'),
             (('zoo', 'add', model_file, '--zoo', zoo), 'needs --name'),
             (('zoo', 'add', tmp_path/'junk.pt', '--zoo', zoo, '--name', 'junk'), 'not a sims_nb model file'),
             (('zoo', 'add', tmp_path/'none.pt', '--zoo', zoo, '--name', 'none'), 'no such model file'),
             (('zoo', 'show', 'pbmc', '--zoo', zoo), "no model named 'pbmc'"),
             (('zoo', 'match', '--zoo', zoo), 'needs a data file'),
             (('zoo', 'match', tmp_path/'none.h5ad', '--zoo', zoo), 'no such file'),
             (('zoo', 'list', '--zoo', tmp_path/'other'), 'not a sims_nb zoo index')]
    for args, message in cases:
        result = run(*args)
        assert result.returncode == 2, (args, result.stderr)
        assert message in result.stderr and 'Traceback' not in result.stderr, (args, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert sorted(Zoo(zoo).entries()) == ['kang']  # nothing bad got in

def test_a_changed_model_file_fails_its_checksum(model_file, tmp_path):
    zoo = Zoo(tmp_path/'zoo')
    zoo.add(model_file, 'kang')
    path = zoo.path/'kang.pt'
    blob = bytearray(path.read_bytes()); blob[len(blob) // 2] ^= 0xFF
    path.write_bytes(bytes(blob))
    with pytest.raises(ValueError, match='fails its checksum'): zoo.load('kang')
    ranked = zoo.match(DATA/'pbmc3k_seurat.h5ad', n_cells=100)  # match reports it and goes on
    assert ranked.score['kang'] == 0 and 'fails its checksum' in ranked.note['kang']

def test_match_skips_a_model_of_another_species(model_file, tmp_path):
    zoo = Zoo(tmp_path/'zoo')
    zoo.add(model_file, 'kang', species='human'); zoo.add(model_file, 'as-mouse', species='mouse')
    ranked = zoo.match(DATA/'pbmc3k_seurat.h5ad', n_cells=100, species='Human')  # case does not matter
    assert ranked.index[0] == 'kang' and ranked.score['kang'] > 0
    assert ranked.score['as-mouse'] == 0 and ranked.note['as-mouse'] == 'another species (mouse, the query is Human)'
    both = zoo.match(DATA/'pbmc3k_seurat.h5ad', n_cells=100)  # no species: every model is run
    assert (both.score > 0).all()
