"""Security: JWT bearer auth (pyjwt), CORS (quart-cors), rate limiting
(quart-rate-limiter), TLS startup checks."""
