import os, pytest, torch

# `make pytest` runs the test files in two processes (pytest-xdist): each keeps to one thread, as the notebooks do under
# nbdev_test, since two torch pools of two threads on two cores oversubscribe. Run alone, a test uses two threads.
THREADS = 1 if os.environ.get('PYTEST_XDIST_WORKER') else 2

@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    torch.set_num_threads(THREADS)
