"""``python -m tower_platform`` is ``towerctl`` (the module torchrun starts: ``torchrun ... -m tower_platform train``)."""

from tower_platform.cli.main import main

if __name__ == "__main__":
    main()
