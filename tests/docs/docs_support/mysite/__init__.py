"""A minimal Django project, so the docs' ``mysite/wsgi.py`` sample runs as written."""
