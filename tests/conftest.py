import pytest

import devs


@pytest.fixture(scope="session")
def digits():
    return devs.load_dataset("digits")


@pytest.fixture
def training_calls(monkeypatch):
    """The image count of every extractor training from now on (the training itself still runs)."""
    import devs.methods.extractor as extractor_module

    calls = []
    original = extractor_module.train_classifier
    monkeypatch.setattr(extractor_module, "train_classifier",
                        lambda *args, **kwargs: calls.append(len(args[1])) or original(*args, **kwargs))
    return calls
