"""The device's TUF side, one job per module (import from the submodules, not from here).

* ``fetcher``   — HTTP transport for ngclient, with Range resumption and plain-words failures;
* ``store``     — the durable trusted metadata on the device (generations, ``current.json``);
* ``failures``  — python-tuf and transport exceptions mapped into ``verifier.errors``;
* ``rootchain`` — the one root-chain walk (TUF 5.3.4-5), shared by device and publisher;
* ``published`` — a pure verifier of a published metadata set, from bytes to parsed state;
* ``client``    — the refresh-and-download session over ngclient, and offline reads.
"""
