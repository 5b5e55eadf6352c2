"""Chalice's own folder (the design card's ``chalicelib/``): the thin layer Chalice deploys.

The library lives in ``slurm_trigger`` (``pip install .`` installs it; the Lambda zip gets it
through the ``vendor/slurm_trigger`` link, which Chalice copies into the zip's root) and the
command line in ``slurm_trigger_cli`` (installed, never packaged). ``app.py`` only wires
event sources to ``slurm_trigger``; docs/deploy.md#what-the-lambda-zip-holds says what the
zip holds.
"""
# rename: thin-chalicelib (this file is Chalice's, not the library's)
