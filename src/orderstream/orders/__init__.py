"""Orders: the state machine, the order store and the partner-facing order API."""
