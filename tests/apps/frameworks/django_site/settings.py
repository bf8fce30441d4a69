"""Settings of the minimal Django project used by tests/test_frameworks.py (no database)."""

SECRET_KEY = "tether-test-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
ROOT_URLCONF = "tests.apps.frameworks.django_site.urls"
INSTALLED_APPS: list[str] = []
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
]
DATABASES: dict = {}
TEMPLATES: list = []
USE_TZ = True
APPEND_SLASH = False
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    # The deliberate 500 in the tests would otherwise print a traceback on every run.
    "loggers": {"django.request": {"level": "CRITICAL", "propagate": False}},
}
