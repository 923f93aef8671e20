"""Settings of the docs' sample Django project."""

SECRET_KEY = "docs-sample-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = "mysite.urls"
MIDDLEWARE: list = []
