from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser

from tests.support.browser import chromium


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Real headless Chromium, one per test module (its pages and contexts are the test's)."""
    with chromium() as browser:
        yield browser
