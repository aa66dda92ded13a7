"""The POS webhook: Stream-compatible in-store order intake."""
