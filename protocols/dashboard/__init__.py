"""The web dashboard: static pages (plain ES modules, no build step) served by the gateway at ``/``."""
