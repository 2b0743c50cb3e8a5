"""HTTP front-end: REST API, token exchange, publish and Server-Sent Events."""
