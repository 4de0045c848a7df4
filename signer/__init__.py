"""otakit publisher: key loading, image compression, delta encoding, release workflow."""
