import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.dirname(HERE))
SAMPLES = os.path.join(ROOT, "samples")
SHARED = os.path.join(os.path.dirname(ROOT), "shared", "datasets")
