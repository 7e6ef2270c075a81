"""Jinja2 templates of gradrank's reports (installed as gradrank.templates)."""
