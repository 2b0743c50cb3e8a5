"""The WebSocket front-end: ``protocol`` (sans-I/O frames and close codes) and ``endpoint`` (the ASGI adapter at ``/ws``)."""
