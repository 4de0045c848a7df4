"""``otakit image diff``: what changed between two OS images, file by file, without mounting.

Every reader (ext4, squashfs, tar, directory) streams its image into the same small record per
path (``entry.Entry``); one pure function (``diff.diff_listings``) compares two listings. Images
of other types get a block-level summary (``blocks``). Nothing is ever written or extracted to a
path taken from an image: content is hashed in chunks as it streams past.

This is a reviewer's tool on the publisher side; the device never imports it.
"""
