"""Options shared by the unit and integration tests."""

from __future__ import annotations

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--long",
        action="store_true",
        default=False,
        help="run the long variants: the REST fuzz test sends 100,000 requests, not 5,000",
    )
