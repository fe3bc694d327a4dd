"""Dashboard pages: one script per page, registered in ``app/dashboard.py``."""
