"""SMS through Twilio's Messages API (or its local simulator)."""
