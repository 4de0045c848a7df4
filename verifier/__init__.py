"""otakit device side: verify signed updates and apply them atomically to an A/B slot pair.

This package is the strictest reader of every format otakit defines, so the schemas the
publisher and the device must agree on live here. It never imports ``signer`` or ``repo``.
"""

__version__ = "0.1.0"
