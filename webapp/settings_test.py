"""Settings for the test suite: the real settings, with a test secret and fast password hashing.

Tests use PostgreSQL and Redis when ``DATABASE_URL``/``CELERY_BROKER_URL`` point at them (CI does),
and the embedded defaults otherwise.
"""

import atexit
import os
import shutil
import tempfile

if not os.environ.get("PRICELOOP_DATA_DIR"):
    # Each test session gets its own data dir (SQLite file, filesystem broker, artifacts), so that two
    # test runs on one machine never share a database file or a broker folder. Worker processes started
    # by the tests are handed this directory explicitly.
    _tmp = tempfile.mkdtemp(prefix="priceloop-test-")
    os.environ["PRICELOOP_DATA_DIR"] = _tmp
    atexit.register(shutil.rmtree, _tmp, ignore_errors=True)

os.environ.setdefault("SECRET_KEY", "test-secret-key-not-for-production-0123456789abcdefghijklmnop")
os.environ.setdefault("DEBUG", "0")
os.environ.setdefault("SECURE_SSL_REDIRECT", "0")

from webapp.settings import *  # noqa: F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # speed; never used outside tests
SESSION_COOKIE_SECURE = False
CSRF_COOKIE_SECURE = False
STORAGES["staticfiles"] = {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}  # noqa: F405

if DATABASES["default"]["ENGINE"].endswith("sqlite3"):  # noqa: F405
    # A file, not pytest-django's in-memory default, so that a real worker process started by the
    # integration tests sees the same test database.
    DATABASES["default"]["TEST"] = {"NAME": str(DATA_DIR / "test-priceloop.sqlite3")}  # noqa: F405
