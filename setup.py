"""Build script for the Cython extensions; all metadata lives in setup.cfg.

Extensions are optional: without a C compiler the install still succeeds and the
pure-Python twins are used (app/trading/ticks.py says which one is live).
"""
from Cython.Build import cythonize
from setuptools import Extension, setup

extensions = [
    Extension("app.trading._ticks", ["app/trading/_ticks.pyx"], optional=True),
    Extension("app.trading._quote", ["app/trading/_quote.pyx"], optional=True),
]

setup(ext_modules=cythonize(extensions, compiler_directives={"language_level": "3"}))
