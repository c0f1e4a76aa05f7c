"""Code shipped to test hosts: the runner, the UART frame codec and the board simulator.

Standard library and pyserial only; Python >= 3.9; Linux and Windows. Never imports Django.
Ship the whole directory as a package named ``remote_scripts``.
"""

__version__ = "1.0.0"
