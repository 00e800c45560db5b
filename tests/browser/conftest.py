"""Browser-test plumbing: the ``browser`` marker and each test's outcome, so a failing test leaves a screenshot."""

import pytest


def pytest_configure(config):
    # registered here as well as in pyproject, so the marker is known wherever pytest is started from
    config.addinivalue_line("markers", "browser: drives JupyterLab and Voila in headless Chromium (make test-browser)")


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    # fixtures read item.rep_call in their teardown to save the page of a failed test
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)
