import os

# One known Taichi offline-cache folder for the whole test run (and CI); CPU unless asked.
os.environ.setdefault("NOISEWARP_TI_CACHE", os.path.join(os.path.dirname(__file__), "..", ".ti_cache"))
