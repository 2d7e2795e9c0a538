"""Air-gapped installs: a bundle of every wheel, a lock, an SBOM and install.sh (build.py), checked by verify.py."""
