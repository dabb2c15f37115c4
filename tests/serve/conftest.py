"""The server tests' shared fixture: the tiny model most of them serve (a file that serves
another declares its own)."""

import pytest

from serve_util import tiny_model


@pytest.fixture(scope="module")
def model():
    return tiny_model(0)
