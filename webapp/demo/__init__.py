"""The demo: seed data on embedded defaults and a small process supervisor (web + worker + beat)."""
