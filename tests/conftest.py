import pytest

import devs


@pytest.fixture(scope="session")
def digits():
    return devs.load_dataset("digits")
