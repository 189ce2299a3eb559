"""Marketplace domain: listings, escrowed purchases paid on the currency chain (see
docs/node.md, Marketplace): ``states`` (the purchase state machine), ``store``,
``service``, ``worker`` (payments, expiries, releases), ``api``, ``verify``."""
