"""The assembly of a running Flow-Gate server: app factory, server, services, CLI, supervisor.

It sits on top: it imports the core (``gateway``, ``auth``) and the front-ends
(``protocols``); nothing but tests, benchmarks and scripts imports it.
"""
