import os
from pathlib import Path

import pytest

os.environ.setdefault('HF_HUB_OFFLINE', '1')
os.environ.setdefault('TRANSFORMERS_OFFLINE', '1')

PROJECT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get('LARETRIEVAL_SHARED', PROJECT.parent / 'shared'))


@pytest.fixture
def shared_data():
    "../shared/data, or a clean skip where it is absent (a user's fresh clone)."
    data = SHARED / 'data'
    if not data.is_dir(): pytest.skip(f'shared data not found at {data}')
    return data
