"""Boot control: which slot boots next, trial boots with a try counter, commit and rollback.

Backends share one small interface (``BootControl`` in ``base``) so the update logic never
knows whether it talks to a JSON file, GRUB's environment block or U-Boot's environment.
"""
