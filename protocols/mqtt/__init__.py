"""MQTT 3.1.1 front-end: sans-I/O codec, session engine and the asyncio listener."""
