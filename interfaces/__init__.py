"""The da-harness framework: the contracts every data-assimilation plugin is written against.

This package holds no DA method; methods arrive through the plugin hook (see hookspecs.py).
"""

__version__ = "0.1.0"
