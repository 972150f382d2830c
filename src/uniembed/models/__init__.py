"""Model families behind one contract (see ``base``)."""
