"""The relay domain: store-and-forward of end-to-end encrypted envelopes over the P2P
network (see ``service`` for the design, ``envelope`` for the signed format)."""
