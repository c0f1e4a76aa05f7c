"""The settings module pytest and the test workers load: the real one, in its test profile."""

import os

os.environ.setdefault("TMS_ENV", "test")

from test_management_system.settings import *  # noqa: F403
