"""Settings as values, the profile's resource set, secrets: read by every layer."""
